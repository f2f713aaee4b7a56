package procstat

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestRunning(t *testing.T) {
	if !Running(os.Getpid()) {
		t.Error("this process is not running")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Exited and not yet reaped: a zombie, not running.
	for deadline := time.Now().Add(10 * time.Second); Running(pid) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if Running(pid) {
		t.Errorf("pid %d, exited but not reaped, counts as running", pid)
	}
	cmd.Wait()
	if Running(pid) {
		t.Errorf("pid %d, reaped, counts as running", pid)
	}
}
