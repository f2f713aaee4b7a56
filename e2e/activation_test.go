package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lb/internal/freeport"
)

// lb started by systemd-socket-activate serves on the socket it passes: a client that
// connected before lb existed (systemd-socket-activate starts lb only once one connects)
// is served, not refused. An upgrade (SIGUSR2) hands the same socket to the new process,
// which serves on it while the old one exits.
func TestSocketActivationServesAndUpgrades(t *testing.T) {
	activate := requireTool(t, "systemd-socket-activate")
	nginx := startNginx(t, 1)
	servers := writeServersFile(t, nginx[0].Addr)
	port := freeport.Get(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pidFile := filepath.Join(t.TempDir(), "lb.pid")
	// Without --accept, systemd-socket-activate passes its listening socket; it gives lb
	// only the variables named with -E.
	p := launchLB(t, []string{activate, "--listen=" + addr, "--fdname=web", "-E", "GORACE", "-E", "LB_LOG_FORMAT"}, nil,
		"serve", "--servers", servers, "--listen", addr, "--pid-file", pidFile)
	t.Cleanup(func() { killUpgraded(pidFile, p.cmd.Process.Pid) })

	first := dialUntil(t, addr, startDeadline)
	t.Cleanup(func() { first.Close() })
	if _, err := io.WriteString(first, "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatalf("send to the activated socket before lb started: %v", err)
	}
	p.awaitListening(t, startDeadline)
	if _, ok := p.log.waitFor(0, time.Second, func(e logEntry) bool {
		return e.Message == "listening on the socket systemd passed" && strings.Contains(e.raw, `"fd_name":"web"`)
	}); !ok {
		t.Fatal(`no "listening on the socket systemd passed" line with fd_name web`)
	}
	first.SetDeadline(time.Now().Add(startDeadline))
	resp, err := http.ReadResponse(bufio.NewReader(first), nil)
	if err != nil {
		t.Fatalf("the client that connected before lb started: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "backend-1\n" {
		t.Fatalf("the client that connected before lb started got %s %q, want 200 backend-1", resp.Status, body)
	}
	// lb holds a finished exchange until the client closes its end: held open, it would
	// keep the upgraded-from process draining for --drain-timeout.
	first.Close()

	inode := listenInode(t, port)
	old := p.cmd.Process.Pid
	if got := readPID(t, pidFile); got != old {
		t.Fatalf("--pid-file holds %d, want lb's pid %d", got, old)
	}
	p.signal(t, syscall.SIGUSR2)
	next := waitPIDFile(t, pidFile, old, startDeadline)
	waitGone(t, old, stopDeadline)
	if got := listenInode(t, port); got != inode {
		t.Errorf("after the upgrade lb listens on socket %s, want systemd's %s", got, inode)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		if n, err := backendOf(client, "http://"+addr+"/"); err != nil || n != 1 {
			t.Fatalf("after the upgrade: backend %d, %v; want backend 1", n, err)
		}
	}

	if err := syscall.Kill(next, syscall.SIGTERM); err != nil {
		t.Fatalf("stop the upgraded lb: %v", err)
	}
	waitGone(t, next, stopDeadline)
	p.wait(t, stopDeadline)
}

// dialUntil connects to addr, trying again until within has passed.
func dialUntil(t *testing.T, addr string, within time.Duration) net.Conn {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to %s: %v", addr, err)
		}
		<-tick.C
	}
}

// listenInode is the inode of the socket listening on 127.0.0.1:port (from /proc/net/tcp):
// the same socket keeps it across processes.
func listenInode(t *testing.T, port int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" { // 0A: LISTEN
			return f[9]
		}
	}
	t.Fatalf("no socket listens on 127.0.0.1:%d", port)
	return ""
}

// readPID reads the pid in the file at path.
func readPID(t *testing.T, path string) int {
	t.Helper()
	pid, err := pidIn(path)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func pidIn(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitPIDFile waits until the pid file holds a pid other than old, and returns it.
func waitPIDFile(t *testing.T, path string, old int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if pid, err := pidIn(path); err == nil && pid != old {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("--pid-file still holds %d %v after SIGUSR2: no new process took over", old, within)
		}
		<-tick.C
	}
}

// gone reports whether process pid has exited: it is no more, or a zombie (the upgraded
// process is not our child, so we cannot reap it).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && strings.HasPrefix(rest, "Z")
}

// waitGone waits for process pid to exit.
func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d has not exited within %v", pid, within)
		}
		<-tick.C
	}
}

// killUpgraded kills the process an upgrade started, if the test left it running: it holds
// the test's stderr pipe of the first lb, and is not our child.
func killUpgraded(pidFile string, first int) {
	if pid, err := pidIn(pidFile); err == nil && pid != first && !gone(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
