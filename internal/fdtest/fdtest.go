// Package fdtest runs a test's code out of descriptors, as a process whose open-files limit
// is reached: the next socket, pipe or accept fails with EMFILE.
package fdtest

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// Squeeze fills every free descriptor number below the highest in use and lowers the
// process's soft open-files limit to just above it, so the next socket, pipe or accept fails
// with EMFILE; it returns what puts both back.
func Squeeze(t testing.TB) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	highest := 0
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			highest = max(highest, fd)
		}
	}
	var fillers []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fd > highest {
			unix.Close(fd)
			break
		}
		fillers = append(fillers, fd)
	}
	tight := old
	tight.Cur = uint64(highest + 1)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &tight); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if restored {
			return
		}
		restored = true
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
			t.Fatal(err)
		}
		for _, fd := range fillers {
			unix.Close(fd)
		}
	}
	t.Cleanup(restore)
	return restore
}
