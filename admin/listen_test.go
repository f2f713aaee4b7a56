package admin

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// unixClient is an HTTP client that reaches every URL through the socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// serve runs h on ln until the test ends.
func serve(t *testing.T, ln net.Listener, h http.Handler) {
	t.Helper()
	e := Serve(ln, h, zerolog.Nop())
	t.Cleanup(func() { e.Shutdown(context.Background()) })
}

// TestUnixSocket: unix:PATH makes a socket only lb's user can use (0600), replaces a stale
// one, refuses to take a live one or a file that is not a socket, answers whatever the Host
// (no browser reaches it), and is gone after Close.
func TestUnixSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	// A stale socket: bound, then left behind as by a process that died.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the stale socket file is not there to test with: %v", err)
	}

	ln, err := Listen("unix:"+path, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	if _, err := Listen("unix:"+path, nil); err == nil || !strings.Contains(err.Error(), "listens on this socket already") {
		t.Errorf("Listen on a live socket: %v; want it refused", err)
	}
	serve(t, ln, New(Config{Backends: newTable()}))
	req, _ := http.NewRequest("GET", "http://evil.example/backends", nil)
	res, err := unixClient(path).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("GET /backends over the socket = %s, want 200", res.Status)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close the socket file is still there: %v", err)
	}

	file := filepath.Join(dir, "not-a-socket")
	os.WriteFile(file, []byte("keep me"), 0o644)
	if _, err := Listen("unix:"+file, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file: %v; want it refused", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("Listen touched a file that is not a socket: %q", b)
	}
	if _, err := Listen("unix:", nil); err == nil {
		t.Error("Listen(unix:) with no path: want an error")
	}
}

// TestConnectionCap opens MaxConns idle connections and then extra ones: the extra ones are
// closed at once, the idle ones within ReadHeaderTimeout, and then a request is served.
func TestConnectionCap(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, New(Config{Backends: newTable()}))
	addr := ln.Addr().String()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	start := time.Now()
	idle := make([]net.Conn, MaxConns)
	for i := range idle {
		idle[i] = dial()
	}
	deadline := time.Now().Add(5 * time.Second)
	for ln.(*capped).open.Load() < MaxConns {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d idle connections accepted after 5s", ln.(*capped).open.Load(), MaxConns)
		}
		time.Sleep(time.Millisecond) // polling the condition, with the deadline above
	}

	// closedWithin reads c until it ends, and reports how long that took.
	closedWithin := func(c net.Conn, limit time.Duration) (time.Duration, error) {
		t0 := time.Now()
		c.SetReadDeadline(t0.Add(limit))
		_, err := io.Copy(io.Discard, c)
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return time.Since(t0), err
		}
		return time.Since(t0), nil
	}
	const extra = 16
	for i := range extra {
		c := dial()
		if took, err := closedWithin(c, time.Second); err != nil {
			t.Fatalf("extra connection %d over the cap still open after %v: want it closed at once", i, took)
		}
	}
	if n := ln.(*capped).open.Load(); n != MaxConns {
		t.Errorf("%d connections held, want the cap %d", n, MaxConns)
	}
	for i, c := range idle {
		if _, err := closedWithin(c, ReadHeaderTimeout+3*time.Second-time.Since(start)); err != nil {
			t.Fatalf("idle connection %d still open %v after it was made; want it cut after %v", i, time.Since(start), ReadHeaderTimeout)
		}
	}
	t.Logf("%d idle connections cut %v after they were made; %d over the cap closed at once", MaxConns, time.Since(start).Round(time.Millisecond), extra)
	res, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz after the idle connections were cut: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("GET /healthz = %s, want 200", res.Status)
	}
}
