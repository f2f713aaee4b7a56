#!/usr/bin/env bash
# Where a proxy's CPU goes under the keep-alive load of compare.sh: perf record of one
# process (PID) while wrk runs against PORT, summed by area (network stack, io_uring,
# epoll, system call entry, user space, ...).
#   bench/uringproto/profile.sh PID PORT NAME
set -u
pid=$1; port=$2; name=$3; out=/tmp/uringbench/$name.perf
perf record -q -g -o $out -p $pid -- sleep 4 &
wrk -t2 -c50 -d4s http://127.0.0.1:$port/ | awk '/Requests\/sec/ {print "'$name' r/s", $2}'
wait
perf report -i $out --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -3
perf report -i $out --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | awk '
  {p=$1; sub("%","",p); s=$3
   if (s ~ /^_*io_/) c["io_uring"]+=p
   else if (s ~ /tcp|inet|ip_|skb|sock|dev_|net_|bbr|copy_|datagram|lookup|loopback|napi|neigh/) c["network stack"]+=p
   else if (s ~ /splice|pipe/) c["splice/pipe"]+=p
   else if (s ~ /epoll|ep_/) c["epoll"]+=p
   else if ($2 == "[.]") c["user space (Go)"]+=p
   else if (s ~ /finish_task_switch|spin_unlock_irq|schedule|switch_to|pick_next|enqueue|dequeue|wake/) c["scheduler (incl. sampling skid at irq restore)"]+=p
   else if (s ~ /entry_SYSCALL|syscall|fdget|fget|fput/) c["syscall entry, fd lookup"]+=p
   else c["other kernel"]+=p}
  END {for (k in c) printf "  %-48s %5.1f%%\n", k, c[k]}' | sort -k2 -t'%' -rn
