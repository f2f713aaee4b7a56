package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"lb/internal/freeport"
	"lb/internal/procstat"
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
	// Without --accept, systemd-socket-activate passes its listening socket; it gives lb
	// only the variables named with -E.
	u := launchUpgradable(t, []string{activate, "--listen=" + addr, "--fdname=web", "-E", "GORACE", "-E", "LB_LOG_FORMAT"},
		"serve", "--servers", servers, "--listen", addr)

	var first net.Conn
	if !waitUntil(startDeadline, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		first = c
		return err == nil
	}) {
		t.Fatalf("systemd-socket-activate does not listen on %s", addr)
	}
	t.Cleanup(func() { first.Close() })
	first.SetDeadline(time.Now().Add(startDeadline))
	if _, err := io.WriteString(first, "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatalf("send to the activated socket before lb started: %v", err)
	}
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
	if !waitUntil(startDeadline, func() bool { return u.pid() == u.first.Process.Pid }) {
		t.Fatalf("lb wrote no pid file within %v", startDeadline)
	}
	if got := u.logged("listening on the socket systemd passed"); len(got) != 1 || got[0]["fd_name"] != "web" || got[0]["listen"] != addr {
		t.Fatalf(`"listening on the socket systemd passed" lines %v, want one with fd_name web and listen %s`, got, addr)
	}

	inode := listenInode(t, port)
	next := u.upgrade(t, startDeadline)
	if got := listenInode(t, port); got != inode {
		t.Errorf("after the upgrade lb listens on socket %s, want systemd's %s", got, inode)
	}
	if got := u.logged("listening on the socket systemd passed"); len(got) != 1 {
		t.Errorf("%d processes took the socket from systemd, want 1: the new one takes it from the old", len(got))
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
	if !waitUntil(stopDeadline, func() bool { return !procstat.Running(next) }) {
		t.Fatalf("the upgraded lb has not exited %v after SIGTERM", stopDeadline)
	}
	<-u.reaped
	if !u.first.ProcessState.Success() {
		t.Errorf("the upgraded-from lb exited with %v, want status 0", u.first.ProcessState)
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
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" { // 0A: LISTEN
			return f[9]
		}
	}
	t.Fatalf("no socket listens on 127.0.0.1:%d", port)
	return ""
}
