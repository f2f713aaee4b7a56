package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// With -syscalls, ab -k -c 50 -n 20000 (the method of issue 24) runs through each proxy
// while perf counts the system calls its threads enter, from ab's start to its exit. A
// tracepoint counts every call, where strace would slow each one down. perf stat -p
// counts only the threads there when it attaches, so a run during which the proxy started
// a thread (Go does, on demand) is run again.

const (
	syscallRequests = 20000
	syscallTries    = 3
)

// syscallsPerRequest runs ab through s under perf and returns the system calls s entered
// per completed request.
func syscallsPerRequest(s *system) (float64, error) {
	for range syscallTries {
		pids := processTree(s.cmd.Process.Pid)
		before := threads(pids)
		n, err := countSyscalls(s.port, pids)
		if err != nil || !slices.ContainsFunc(threads(pids), func(t int) bool { return !slices.Contains(before, t) }) {
			return n, err
		}
	}
	return 0, fmt.Errorf("the proxy started threads during each of %d counts: perf missed their calls", syscallTries)
}

// countSyscalls runs ab against port under perf, counting the calls of the threads of pids.
func countSyscalls(port int, pids []int) (float64, error) {
	list := make([]string, len(pids))
	for i, pid := range pids {
		list[i] = strconv.Itoa(pid)
	}
	var ab, perf bytes.Buffer
	cmd := exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strings.Join(list, ","), "--",
		"ab", "-q", "-k", "-c", "50", "-n", strconv.Itoa(syscallRequests), fmt.Sprintf("http://127.0.0.1:%d/", port))
	cmd.Stdout, cmd.Stderr = &ab, &perf
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("perf stat ... ab: %w: %s%s", err, perf.Bytes(), ab.Bytes())
	}
	calls, err := perfCount(perf.Bytes())
	if err != nil {
		return 0, err
	}
	done, err := abCompleted(ab.Bytes())
	if err != nil {
		return 0, err
	}
	return calls / float64(done), nil
}

// threads lists the thread ids of pids.
func threads(pids []int) []int {
	var tids []int
	for _, pid := range pids {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range ents {
			if tid, err := strconv.Atoi(e.Name()); err == nil {
				tids = append(tids, tid)
			}
		}
	}
	return tids
}

// perfCount reads the count of raw_syscalls:sys_enter from perf stat -x, output.
func perfCount(out []byte) (float64, error) {
	for line := range strings.Lines(string(out)) {
		f := strings.Split(line, ",")
		if len(f) < 3 || f[2] != "raw_syscalls:sys_enter" {
			continue
		}
		n, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			// "<not counted>": the processes never ran; "<not supported>": no tracepoint.
			return 0, fmt.Errorf("perf counted no system calls (%s): is the proxy running, and may perf trace it?", f[0])
		}
		return n, nil
	}
	return 0, fmt.Errorf("no raw_syscalls:sys_enter in perf's output: %s", out)
}

var (
	abComplete = regexp.MustCompile(`Complete requests:\s+(\d+)`)
	abFailed   = regexp.MustCompile(`Failed requests:\s+(\d+)`)
	abNon2xx   = regexp.MustCompile(`Non-2xx responses:\s+(\d+)`)
)

// abCompleted is the number of requests ab completed, or an error if any failed.
func abCompleted(out []byte) (int, error) {
	m := abComplete.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no Complete requests in ab's output: %s", out)
	}
	done, _ := strconv.Atoi(string(m[1]))
	for _, re := range []*regexp.Regexp{abFailed, abNon2xx} {
		if m := re.FindSubmatch(out); m != nil && string(m[1]) != "0" {
			return 0, fmt.Errorf("ab: %s", m[0])
		}
	}
	if done == 0 {
		return 0, fmt.Errorf("ab completed no request")
	}
	return done, nil
}
