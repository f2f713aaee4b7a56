package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestAccessLogReopensOnSIGUSR1 does what logrotate does: rename the access log, send
// SIGUSR1, and lb writes on to a new file at the old path.
func TestAccessLogReopensOnSIGUSR1(t *testing.T) {
	b := startTCPBackend(t, echo)
	path := filepath.Join(t.TempDir(), "access.log")
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, b.Addr), "--listen", "127.0.0.1:0", "--access-log", path)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatalf("lb is listening and its access log is not there: %v", err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	lb.signal(t, syscall.SIGUSR1)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		after, err := os.Stat(path)
		if err == nil {
			if os.SameFile(before, after) {
				t.Fatal("the access log at the old path is the renamed file")
			}
			break
		}
		select {
		case <-deadline:
			t.Fatalf("no new access log at %s within 10 s of SIGUSR1 (%v); lb's log:\n%s", path, err, lb.log)
		case <-tick.C:
		}
	}
	c := dialLB(t, lb.Addr) // and lb still serves
	c.Write([]byte("hello"))
	if got := make([]byte, 5); !readFull(c, got) || string(got) != "hello" {
		t.Fatalf("echo after SIGUSR1: %q", got)
	}
	c.Close()
	lb.stop(t)
}
