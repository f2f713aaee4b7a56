package l4

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/httpsniff"
	"lb/internal/logtest"
	"lb/ring"
)

// The rest of l4's blocks that no other test reached: the debug lines, a dial that fails
// before it starts, an accept error about one connection, bad configs and listeners, and
// the bound on the pipes kept for reuse.

// pathsDebugLog is a log at debug level that a test can read.
func pathsDebugLog() (*logtest.Lines, zerolog.Logger) {
	lines, log := logtest.New()
	return lines, log.Level(zerolog.DebugLevel)
}

type pathsBackendSpec struct{ id, addr string }

// pathsServe is serveOn for backends with ids of the test's choosing.
func pathsServe(t *testing.T, cfg Config, specs ...pathsBackendSpec) *testServer {
	t.Helper()
	var backends []ring.Backend
	for _, b := range specs {
		backends = append(backends, ring.Backend{ID: b.id, Addr: b.addr, Weight: 1})
	}
	r, err := ring.New(backends...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ring = r
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-served
	})
	return &testServer{Server: s, addr: ln.Addr().String(), ring: r}
}

// pathsLine is the first line of lines with this message, or nil.
func pathsLine(lines *logtest.Lines, msg string) map[string]any {
	for _, m := range lines.All() {
		if m["message"] == msg {
			return m
		}
	}
	return nil
}

// TestPathsDebugLines: --log-level debug logs one line per connection with its client,
// backend, sniff result and bytes each way; a failed dial and an unrouted connection say so;
// a client gone by a reset is named "?".
func TestPathsDebugLines(t *testing.T) {
	lines, log := pathsDebugLog()
	cfg := testConfig()
	cfg.Log = log
	cfg.IdleTimeout = 200 * time.Millisecond // closes the first connection while its client is there
	live := startBackend(t, closingName("live"))
	s := pathsServe(t, cfg, pathsBackendSpec{"dead", pathsDeadAddr(t)}, pathsBackendSpec{"live", live.addr()})

	req := "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
	c := pathsDial(t, s.addr, 5*time.Second)
	io.WriteString(c, req)
	resp, err := io.ReadAll(c)
	if err != nil || len(resp) == 0 {
		t.Fatalf("response %q, %v", resp, err)
	}
	pathsWait(t, 3*time.Second, "the connection's line", func() bool { return pathsLine(lines, "connection closed") != nil })
	if m := pathsLine(lines, "dial failed, trying the next backend"); m == nil || m["backend"] != "dead" || m["error"] == nil {
		t.Errorf("the failed dial's line: %v, want backend dead and its error", m)
	}
	m := pathsLine(lines, "connection closed")
	want := map[string]any{
		"client": c.LocalAddr().String(), "backend": "live", "sniff": httpsniff.KindHTTP1.String(),
		"bytes_down": float64(len(resp)), "error": errIdle.Error(),
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("the connection's line has %s=%v, want %v (line %v)", k, m[k], v, m)
		}
	}
	if _, ok := m["duration"]; !ok {
		t.Errorf("the connection's line has no duration: %v", m)
	}
	c.Close()

	// A client that resets: it has no peer name any more when lb logs it.
	c = pathsDial(t, s.addr, 5*time.Second)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n")
	pathsWait(t, 3*time.Second, "the head at lb", func() bool {
		return pathsCount(s.Server, func(c *conn) bool { return c.setup != nil && c.n > 0 }) == 1
	})
	pathsReset(c)
	pathsWait(t, 3*time.Second, "the reset client's line", func() bool { return lines.Count("connection closed") == 2 })
	if m := lines.All(); m[len(m)-1]["client"] != "?" || m[len(m)-1]["error"] == nil {
		t.Errorf("the reset client's line: %v, want client ? and the error", m[len(m)-1])
	}

	s.ring.SetUp("dead", false)
	s.ring.SetUp("live", false)
	if status, _ := get(t, s.addr, ""); status != http.StatusServiceUnavailable {
		t.Fatalf("none up: %d, want 503", status)
	}
	if m := pathsLine(lines, "connection not routed"); m == nil || m["sniff"] != httpsniff.KindHTTP1.String() {
		t.Errorf("the refused connection's line: %v", m)
	}
}

// TestPathsDialFailsAtOnce: a connect that fails before it starts (no route to a broadcast
// address) is a failed dial like any other: reported, and the next backend dialed.
func TestPathsDialFailsAtOnce(t *testing.T) {
	live := startBackend(t, httpName("live"))
	var failures atomic.Int64
	cfg := testConfig()
	cfg.OnDialFailure = func(b ring.Backend) { failures.Add(1) }
	s := startServer(t, cfg, "255.255.255.255:1", live.addr())
	for range 2 {
		if status, body := get(t, s.addr, ""); status != 200 || body != "live" {
			t.Fatalf("got %d %q, want 200 live", status, body)
		}
	}
	if n := failures.Load(); n != 1 {
		t.Fatalf("OnDialFailure heard %d failures, want 1", n)
	}
}

// TestPathsAcceptSkipsAbortedConnections: an accept error about one connection (it was
// aborted while queued) does not pause accepting.
func TestPathsAcceptSkipsAbortedConnections(t *testing.T) {
	real := accept4
	var calls atomic.Int64
	accept4 = func(lfd int) (int, error) {
		if calls.Add(1) == 1 {
			return -1, syscall.ECONNABORTED
		}
		return real(lfd)
	}
	t.Cleanup(func() { accept4 = real })
	lines, log := pathsDebugLog()
	cfg := testConfig()
	cfg.Log = log
	s := startServer(t, cfg, startBackend(t, httpName("ok")).addr())
	if status, body := get(t, s.addr, ""); status != 200 || body != "ok" {
		t.Fatalf("got %d %q", status, body)
	}
	if calls.Load() < 2 {
		t.Fatalf("accept4 called %d times: the aborted connection was never injected", calls.Load())
	}
	if n := lines.Count("accept failed: pausing accepts, open connections go on"); n != 0 {
		t.Fatalf("an aborted connection paused accepting (%d warnings)", n)
	}
}

// TestPathsBadConfigAndListeners: New refuses a config it cannot run; Serve refuses a
// listener that is not TCP, or that is closed.
func TestPathsBadConfigAndListeners(t *testing.T) {
	r, _ := ring.New(ring.Backend{ID: "b", Addr: "127.0.0.1:1"})
	for name, cfg := range map[string]Config{
		"no ring":                 {SniffTimeout: time.Second, MaxHeaderBytes: 1, ConnectTimeout: time.Second},
		"session cookie no store": {Ring: r, SniffTimeout: time.Second, MaxHeaderBytes: 1, ConnectTimeout: time.Second, Sticky: Sticky{SessionCookie: "sid"}},
	} {
		if s, err := New(cfg); err == nil {
			s.Shutdown(context.Background())
			t.Errorf("%s: New accepted it", name)
		}
	}
	s := startServer(t, testConfig())
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if err := s.Serve(ul); err == nil || errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve of a unix listener: %v, want an error", err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl.Close()
	if err := s.Serve(tl); err == nil || errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve of a closed listener: %v, want an error", err)
	}
}

// TestPathsPipePoolBounded: after more stalled flows at once than the pool keeps, the pipes
// beyond maxFreePipes are closed, not kept.
func TestPathsPipePoolBounded(t *testing.T) {
	const n = maxFreePipes + 8
	payload := randomBytes(t, 256<<10)
	b := startBackend(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 512))
		c.Write(payload)
	})
	s := serveOn(t, testConfig(), listenSmallSendBuffer(t), b.addr())
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		conns[i] = dialSmallWindow(t, s.addr)
		conns[i].SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conns[i], "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	}
	pathsWait(t, 3*time.Second, fmt.Sprintf("%d stalled flows", n), func() bool { return pathsCount(s.Server, pathsStalled) == n })
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := io.ReadAll(bufio.NewReader(c))
			if err != nil || len(got) != len(payload) {
				t.Errorf("read %d bytes (%v), want %d", len(got), err, len(payload))
			}
			c.Close()
		}()
	}
	wg.Wait()
	pathsWait(t, 3*time.Second, "every connection closed", func() bool { return s.Stats().Active == 0 })
	s.pipes.mu.Lock()
	free := len(s.pipes.free)
	s.pipes.mu.Unlock()
	if free > maxFreePipes {
		t.Fatalf("the pool keeps %d free pipes, want at most %d", free, maxFreePipes)
	}
	if p := s.Stats().PipesInUse; p > int64(len(s.loops)) {
		t.Fatalf("%d pipes in use with no connection", p)
	}
}
