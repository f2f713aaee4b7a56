package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestBuildElsewhereSaysLinux: built for another system, lb does not compile, and the error
// says why: it needs Linux's epoll and splice.
func TestBuildElsewhereSaysLinux(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the dependencies: skipped with -short")
	}
	cmd := exec.Command("go", "build", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), "GOOS=darwin", "GOARCH=arm64", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lb_runs_on_Linux_only__it_needs_epoll_and_splice") {
		t.Fatalf("GOOS=darwin go build: %v\n%s\nwant a failure that names Linux, epoll and splice", err, out)
	}
}
