package main

import (
	"os"
	"slices"
	"testing"
)

func TestPerfCount(t *testing.T) {
	n, err := perfCount([]byte("\n81234,,raw_syscalls:sys_enter,1500123456,100.00,,\n"))
	if err != nil || n != 81234 {
		t.Errorf("counted: %v, %v; want 81234", n, err)
	}
	for _, out := range []string{
		"<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n",
		"<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n",
		"Error: no such event\n",
	} {
		if n, err := perfCount([]byte(out)); err == nil {
			t.Errorf("%q: %v, want an error", out, n)
		}
	}
}

func TestABCompleted(t *testing.T) {
	const ok = "Concurrency Level:      50\nComplete requests:      20000\nFailed requests:        0\nKeep-Alive requests:    20000\n"
	if n, err := abCompleted([]byte(ok)); err != nil || n != 20000 {
		t.Errorf("completed: %d, %v; want 20000", n, err)
	}
	for _, out := range []string{
		"Complete requests:      20000\nFailed requests:        12\n",
		"Complete requests:      20000\nFailed requests:        0\nNon-2xx responses:      20000\n",
		"Complete requests:      0\nFailed requests:        0\n",
		"apr_socket_recv: Connection refused (111)\n",
	} {
		if n, err := abCompleted([]byte(out)); err == nil {
			t.Errorf("%q: %d, want an error", out, n)
		}
	}
}

func TestThreads(t *testing.T) {
	tids := threads([]int{os.Getpid()})
	if !slices.Contains(tids, os.Getpid()) || len(tids) < 2 {
		t.Errorf("threads of this process: %v; want its main thread and the runtime's", tids)
	}
}
