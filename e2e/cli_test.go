package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"lb/internal/freeport"
)

// A bad servers file stops lb serve and lb probe with exit status 2 and FILE:LINE: reason.
func TestBadServersFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		where   string // ":LINE:" after the file name, or ":" for the file as a whole
		reason  string
	}{
		{"bad port", "127.0.0.1:8000\n127.0.0.1:99999\n", ":2:", "port"},
		{"https", "# TLS backends\nhttps://127.0.0.1:8443\n", ":2:", "https"},
		{"duplicate", "127.0.0.1:8000\nhttp://127.0.0.1:8000/\n", ":2:", "duplicate"},
		{"empty", "", ":", "no backends"},
		{"comments only", "# nothing here\n\n   # still nothing\n", ":", "no backends"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeServersFile(t, tc.content)
			for _, cmd := range [][]string{
				{"serve", "-f", path, "--listen", "127.0.0.1:0"},
				{"probe", "-f", path},
			} {
				_, stderr, status := runLB(t, cmd...)
				if status != 2 {
					t.Errorf("lb %s with %q: exit status %d, want 2; stderr: %s", cmd[0], tc.content, status, stderr)
				}
				if !strings.Contains(stderr, path+tc.where) || !strings.Contains(stderr, tc.reason) {
					t.Errorf("lb %s with %q: stderr %q, want %q and %q", cmd[0], tc.content, stderr, path+tc.where, tc.reason)
				}
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no-such-servers.txt")
		_, stderr, status := runLB(t, "serve", "-f", path, "--listen", "127.0.0.1:0")
		if status != 2 || !strings.Contains(stderr, path) {
			t.Errorf("lb serve -f %s (missing): exit status %d, stderr %q; want 2 and the file name", path, status, stderr)
		}
	})
}

// A bad flag value or an unknown flag or command is bad input: exit status 2 and a message
// naming it, before lb listens. The servers file is valid, so each case is bad only in its
// own flag (cmd/lb's TestBadInputIsExit2BeforeAnythingStarts covers every check).
func TestBadFlags(t *testing.T) {
	servers := writeServersFile(t, fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)))
	serve := []string{"serve", "-f", servers, "--listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		args []string
		name string // what stderr must name
	}{
		{append(serve, "--rise", "x"), "rise"},
		{append(serve, "--rise", "0"), "--rise"},
		{append(serve, "--fall", "0"), "--fall"},
		{append(serve, "--resolve-every", "10ms"), "--resolve-every"},
		{append(serve, "--session-cookie", "a b"), "--session-cookie"},
		{append(serve, "--session-ttl", "0s"), "--session-ttl"},
		{append(serve, "--health-interval", "soon"), "health-interval"},
		{append(serve, "--log-format", "xml"), "--log-format"},
		{append(serve, "--no-such-flag"), "no-such-flag"},
		{[]string{"probe", "-f", servers, "--health-timeout", "-"}, "health-timeout"},
		{[]string{"no-such-command"}, "no-such-command"},
	} {
		stderr, status := runRefused(t, tc.args...)
		if status != 2 {
			t.Errorf("lb %s: exit status %d, want 2; stderr: %s", strings.Join(tc.args, " "), status, stderr)
		}
		if !strings.Contains(stderr, tc.name) {
			t.Errorf("lb %s: stderr %q does not name %s", strings.Join(tc.args, " "), stderr, tc.name)
		}
	}
}

// probeState returns the STATE column of the probe table row of addr.
func probeState(table, addr string) string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == addr {
			return f[2]
		}
	}
	return ""
}

// lb probe: exit 0 and "up" rows when every backend answers; exit 1 and a "down" row when
// one does not.
func TestProbe(t *testing.T) {
	a, b := startTCPBackend(t, echo), startTCPBackend(t, echo)
	stdout, stderr, status := runLB(t, "probe", "-f", writeServersFile(t, a.Addr, "http://"+b.Addr))
	if status != 0 {
		t.Errorf("probe, all up: exit status %d, want 0; stderr: %s", status, stderr)
	}
	for _, addr := range []string{a.Addr, b.Addr} {
		if s := probeState(stdout, addr); s != "up" {
			t.Errorf("probe, all up: %s is %q, want up; table:\n%s", addr, s, stdout)
		}
	}

	closed := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	stdout, stderr, status = runLB(t, "probe", "-f", writeServersFile(t, a.Addr, closed), "--health-timeout", "500ms")
	if status != 1 {
		t.Errorf("probe, one down: exit status %d, want 1; stderr: %s", status, stderr)
	}
	if s := probeState(stdout, a.Addr); s != "up" {
		t.Errorf("probe, one down: %s is %q, want up; table:\n%s", a.Addr, s, stdout)
	}
	if s := probeState(stdout, closed); s != "down" {
		t.Errorf("probe, one down: %s is %q, want down; table:\n%s", closed, s, stdout)
	}
}

// lb demo answers from three in-process backends, one per new connection.
func TestDemo(t *testing.T) {
	lb := startLB(t, nil, "demo", "--listen", "127.0.0.1:0", "--log-format", "json")
	client := newClient(false)
	seen := map[string]bool{}
	for i := range 3 {
		resp, err := client.Get("http://" + lb.Addr + "/")
		if err != nil {
			t.Fatalf("demo request %d: %v", i, err)
		}
		resp.Body.Close()
		name := resp.Header.Get("X-Backend")
		if resp.StatusCode != http.StatusOK || name == "" {
			t.Fatalf("demo request %d: %s, X-Backend %q", i, resp.Status, name)
		}
		seen[name] = true
	}
	if len(seen) != 3 {
		t.Errorf("3 demo requests reached %d backends (%v), want 3", len(seen), seen)
	}
	lb.stop(t) // after the exit, all of stdout has been read
	// With --listen 127.0.0.1:0 the curl lines must name the port lb got, not port 0.
	if want := "curl http://" + lb.Addr + "/"; !strings.Contains(lb.stdout.String(), want) {
		t.Errorf("lb demo --listen 127.0.0.1:0 printed no %q line; stdout:\n%s", want, lb.stdout.String())
	}
}

func TestVersion(t *testing.T) {
	stdout, stderr, status := runLB(t, "--version")
	if status != 0 || strings.TrimSpace(stdout) == "" {
		t.Errorf("lb --version: exit status %d, stdout %q, stderr %q; want 0 and a version", status, stdout, stderr)
	}
}
