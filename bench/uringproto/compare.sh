#!/usr/bin/env bash
# The kill-rule measurement of issue 24 point 5: keep-alive r/s, CPU per request and
# system calls per request of the io_uring prototype, lb's epoll engine and HAProxy (mode
# tcp), round robin over the same two nginx backends, in one run, interleaved, ROUNDS
# rounds. The nginx and HAProxy configurations are bench/peers.sh's (the shared ones),
# moved to their own directory and ports so this can run beside a peers.sh run.
#
#   LB=/tmp/lb-epoll PROTO=/tmp/uringproto bench/uringproto/compare.sh
# env: ROUNDS (3) DUR (5) CONF (/work/shared/bench/conf) PERF (1: a perf stat pass)
set -u
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; PERF=${PERF:-1}
CONF=${CONF:-/work/shared/bench/conf}
LB=${LB:?build lb: go build -o /tmp/lb-epoll ./cmd/lb}; PROTO=${PROTO:?go build -o /tmp/uringproto ./bench/uringproto}
W=/tmp/uringbench; mkdir -p $W/www
port_map() { sed -e "s#/tmp/lbbench#$W#g" -e 's/1900\([12]\)/2900\1/g' -e 's/19100/29100/g' "$1"; }
port_map $CONF/backends.nginx.conf > $W/backends.nginx.conf
port_map $CONF/haproxy.cfg > $W/haproxy.cfg
printf '127.0.0.1:29001\n127.0.0.1:29002\n' > $W/servers.txt
pids=()
cleanup() {
  for f in backends haproxy; do [ -f $W/$f.pid ] && kill "$(cat $W/$f.pid)" 2>/dev/null; rm -f $W/$f.pid; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
}
trap cleanup EXIT
nginx -c $W/backends.nginx.conf || exit 2
haproxy -f $W/haproxy.cfg || exit 2
$LB serve -f $W/servers.txt --listen 127.0.0.1:29400 ${LB_ARGS:-} >$W/lb.log 2>&1 & pids+=($!); lb_pid=$!
$PROTO -listen 127.0.0.1:29500 -backends 127.0.0.1:29001,127.0.0.1:29002 ${PROTO_ARGS:-} >$W/proto.log 2>&1 & pids+=($!); proto_pid=$!
$PROTO -fixed -listen 127.0.0.1:29501 -backends 127.0.0.1:29001,127.0.0.1:29002 ${PROTO_ARGS:-} >$W/protofixed.log 2>&1 & pids+=($!); fixed_pid=$!
sleep 1
declare -A port=([haproxy]=29100 [lb]=29400 [uring]=29500 [uringfixed]=29501)
systems=${ONLY:-"uring uringfixed lb haproxy"}
for s in $systems; do
  curl -fsS -o /dev/null --max-time 3 http://127.0.0.1:${port[$s]}/ || { echo "$s does not answer on ${port[$s]}"; exit 1; }
done
pids_of() { case $1 in haproxy) cat $W/haproxy.pid ;; lb) echo $lb_pid ;; uring) echo $proto_pid ;; uringfixed) echo $fixed_pid ;; esac; }
# context switches of every thread (voluntary + involuntary)
switches() { local t=0; for p in "$@"; do t=$((t + $(cat /proc/$p/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'))); done; echo $t; }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
hz=$(getconf CLK_TCK)
wrkrun() { wrk -t2 -c50 -d${1}s http://127.0.0.1:${port[$2]}/ 2>&1 | awk '/^ *[0-9]+ requests in/ {r=$1} /Requests\/sec/ {printf "%s %.0f", r, $2}'; }
echo "round system r/s requests cpu_us/req switches/req syscalls/req load" | tee $W/rows.txt
for r in $(seq $ROUNDS); do
  for s in $systems; do
    p=$(pids_of $s)
    t0=$(ticks $p); c0=$(switches $p); read -r reqs rps < <(wrkrun $DUR $s); t1=$(ticks $p); c1=$(switches $p)
    cs=$(awk -v d=$((c1 - c0)) -v n=$reqs 'BEGIN {printf "%.3f", d / n}')
    cpu=$(awk -v d=$((t1 - t0)) -v hz=$hz -v n=$reqs 'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
    sc=-
    if [ "$PERF" = 1 ]; then
      perf stat -x, -e raw_syscalls:sys_enter -p $(echo $p | tr ' ' ,) -o $W/perf.out -- sleep 3 &
      pp=$!
      read -r preqs _ < <(wrkrun 3 $s)
      wait $pp
      sc=$(awk -F, -v n=$preqs '/raw_syscalls/ {printf "%.2f", $1 / n}' $W/perf.out)
    fi
    echo "$r $s $rps $reqs $cpu $cs $sc $(cut -d' ' -f1 /proc/loadavg)" | tee -a $W/rows.txt
    sleep 0.5
  done
done

med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
printf '%-11s %9s %11s %12s %13s  %s\n' system "r/s" "cpu us/req" "switch/req" "syscalls/req" "r/s and cpu/req vs lb"
for s in $systems; do
  col() { awk -v s=$s -v c=$1 '$2 == s {print $c}' $W/rows.txt | med; }
  rps=$(col 3); cpu=$(col 5); cs=$(col 6); sc=$(col 7)
  lrps=$(awk '$2 == "lb" {print $3}' $W/rows.txt | med); lcpu=$(awk '$2 == "lb" {print $5}' $W/rows.txt | med)
  printf '%-11s %9s %11s %12s %13s  %s\n' $s $rps $cpu $cs $sc "$(awk -v a=$rps -v b=$lrps -v c=$cpu -v d=$lcpu 'BEGIN {if (b > 0 && d > 0) printf "x%.2f r/s, x%.2f cpu", a / b, c / d}')"
done
