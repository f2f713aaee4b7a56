// Package procstat tells, from /proc, whether a process still runs: the tests and
// benchmarks of an upgrade wait for the old lb to be gone, which its parent may never reap.
package procstat

import (
	"os"
	"strconv"
	"strings"
)

// Running reports whether pid is a live process: not gone, and not a zombie (exited, not
// yet reaped).
func Running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The command name may hold spaces and parentheses: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}
