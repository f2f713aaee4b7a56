// Package fdtest runs a test's code out of descriptors, as a process whose open-files limit
// is reached: the next socket, pipe or accept fails with EMFILE.
package fdtest

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Squeeze lowers the process's soft open-files limit to zero, so the next socket, pipe or
// accept fails with EMFILE while every descriptor already open keeps working; it returns what
// puts the limit back. A limit below every number in use, rather than filling the free numbers,
// holds even when another goroutine closes a descriptor meanwhile: a freed low number would
// otherwise be the next one handed out.
func Squeeze(t testing.TB) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 0, Max: old.Max}); err != nil {
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
	}
	t.Cleanup(restore)
	return restore
}
