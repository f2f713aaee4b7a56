package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// With -cpu, each keepalive and close run also reads where the machine's CPU went while wrk
// ran: the proxy's, the backends' and wrk's own time, and the time no one ran. On loopback
// the whole pipeline shares the CPUs, so these figures bound what any proxy can reach: r/s
// can never exceed the CPUs divided by the CPU all three spend per request.

// clockTick is USER_HZ, the unit of /proc's times: 100 on every Linux ABI Go supports.
const clockTick = 100

// cpuSample is one reading of the ticks of the pipeline's parts.
type cpuSample struct{ proxy, backends, wrk, idle, total int64 }

// cpuCost is a run's CPU in µs per request, and the share of the machine left idle.
type cpuCost struct{ proxy, backends, wrk, idle float64 }

func readCPU(proxy, backends []int, wrk int) cpuSample {
	idle, total := machineTicks()
	return cpuSample{proxy: treeTicks(proxy), backends: treeTicks(backends), wrk: procTicks(wrk), idle: idle, total: total}
}

// cost turns two readings around n requests into µs per request.
func (a cpuSample) cost(b cpuSample, n float64) cpuCost {
	us := func(t int64) float64 { return float64(t) * 1e6 / clockTick / n }
	return cpuCost{proxy: us(b.proxy - a.proxy), backends: us(b.backends - a.backends), wrk: us(b.wrk - a.wrk),
		idle: float64(b.idle-a.idle) / float64(max(b.total-a.total, 1))}
}

func treeTicks(pids []int) (t int64) {
	for _, pid := range pids {
		t += procTicks(pid)
	}
	return t
}

// procTicks is a process's user and system time, its threads' included; the softirq work
// the kernel does in its system calls counts as its system time.
func procTicks(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return statTicks(b)
}

// statTicks reads utime and stime from a /proc/PID/stat line; 0 if it is not one. The
// command name may hold spaces and parentheses, so fields are counted from the last ')'.
func statTicks(stat []byte) int64 {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 { // state is field 3 of the line, utime 14, stime 15
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return u + s
}

// machineTicks is the time all CPUs spent idle (or waiting for I/O), and in all, from the
// first line of /proc/stat.
func machineTicks() (idle, total int64) {
	b, _ := os.ReadFile("/proc/stat")
	return cpuLineTicks(b)
}

func cpuLineTicks(stat []byte) (idle, total int64) {
	line, _, _ := bytes.Cut(stat, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal; guest time is inside user
			total += n
		}
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return idle, total
}

// printCPU prints where the CPU went per request in the median run of each system, and
// the ceiling it sets: the r/s at which the CPUs would be full with no idle time. Then, for
// keepalive and close, what the bare calls cost and, if haproxy ran, the most a proxy may
// spend per request to reach 1.10× its r/s.
func printCPU(measured []*system, costs map[string]map[string]cpuCost, res map[string]map[string]float64, bare map[string]float64) {
	cpus := float64(runtime.NumCPU())
	fmt.Printf("\nCPU per request in the median run (µs; user + system, softirq included), %.0f CPUs\n\n", cpus)
	fmt.Println("| system | scenario | r/s | proxy | backends | wrk | idle | ceiling r/s |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, sc := range []string{"keepalive", "close"} {
		for _, s := range measured {
			c, ok := costs[s.name][sc]
			if !ok || res[s.name][sc] == 0 {
				continue
			}
			fmt.Printf("| %s | %s | %.0f | %.1f | %.1f | %.1f | %.1f%% | %.0f |\n", s.name, sc, res[s.name][sc],
				c.proxy, c.backends, c.wrk, 100*c.idle, cpus*1e6/(c.proxy+c.backends+c.wrk))
		}
	}
	fmt.Println("\nThe bare calls: the reads, writes, accepts, connects and closes a proxy makes per request,")
	fmt.Printf("timed alone, with no epoll and no wake-ups (median of %d batches); and, against haproxy, the\n", bareBatches)
	fmt.Println("most a proxy may spend per request to reach 1.10× its r/s, if wrk and the backends cost what")
	fmt.Println("they cost behind it:")
	fmt.Println()
	fmt.Println("| scenario | bare calls | budget, no CPU idle | budget, idle as haproxy's | haproxy spends |")
	fmt.Println("|---|---|---|---|---|")
	for _, sc := range []string{"keepalive", "close"} {
		c, ok := costs["haproxy"][sc]
		if rps := res["haproxy"][sc]; ok && rps > 0 {
			fmt.Printf("| %s | %.1f µs | %.1f µs | %.1f µs | %.1f µs |\n", sc, bare[sc], budget(cpus, rps, c, 0),
				budget(cpus, rps, c, c.idle), c.proxy)
		} else {
			fmt.Printf("| %s | %.1f µs | - | - | - |\n", sc, bare[sc])
		}
	}
}

// budget is the most CPU a proxy may spend per request for 1.10× the r/s that ref's run
// reached, on cpus CPUs of which the share idle goes unused, if wrk and the backends cost
// what they cost in ref.
func budget(cpus, rps float64, ref cpuCost, idle float64) float64 {
	return cpus*1e6*(1-idle)/(1.10*rps) - ref.backends - ref.wrk
}
