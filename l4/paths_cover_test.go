//go:build linux

package l4

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

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
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
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

	// A client that resets: its address, read at accept, is still in the line.
	c = pathsDial(t, s.addr, 5*time.Second)
	resetClient := c.LocalAddr().String()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n")
	pathsWait(t, 3*time.Second, "the head at lb", func() bool {
		return pathsCount(s.Server, func(c *conn) bool { return c.rt != nil && c.rt.first.n > 0 }) == 1
	})
	pathsReset(c)
	pathsWait(t, 3*time.Second, "the reset client's line", func() bool { return lines.Count("connection closed") == 2 })
	if m := lines.All(); m[len(m)-1]["client"] != resetClient || m[len(m)-1]["error"] == nil {
		t.Errorf("the reset client's line: %v, want client %s and the error", m[len(m)-1], resetClient)
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
	s := pathsStartServer(t, cfg, "255.255.255.255:1", live.addr())
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
	accept4 = func(lfd int, sa *unix.RawSockaddrAny) (int, error) {
		if calls.Add(1) == 1 {
			return -1, syscall.ECONNABORTED
		}
		return real(lfd, sa)
	}
	t.Cleanup(func() { accept4 = real })
	lines, log := pathsDebugLog()
	cfg := testConfig()
	cfg.Log = log
	s := pathsStartServer(t, cfg, startBackend(t, httpName("ok")).addr())
	if status, body := get(t, s.addr, ""); status != 200 || body != "ok" {
		t.Fatalf("got %d %q", status, body)
	}
	for _, l := range s.loops {
		l.call(func() {}) // each loop is done with the accepts it was making
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
	s := pathsStartServer(t, testConfig())
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
	if err := s.Serve((*net.TCPListener)(nil)); err == nil || errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve of a nil *net.TCPListener: %v, want an error", err)
	}
}

// TestPathsListenerServedTwice: a listener handed to Serve twice cannot join the loops' epoll
// sets again; that is logged, and the listener goes on being served.
func TestPathsListenerServedTwice(t *testing.T) {
	lines, log := pathsDebugLog()
	cfg := testConfig()
	cfg.Log = log
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := pathsServeOn(t, cfg, ln, startBackend(t, httpName("ok")).addr())
	again := make(chan error, 1)
	go func() { again <- s.Serve(ln) }()
	pathsWait(t, 3*time.Second, "the error of the second watch", func() bool { return lines.Count("cannot watch the listener") == len(s.loops) })
	if status, body := get(t, s.addr, ""); status != 200 || body != "ok" {
		t.Fatalf("got %d %q", status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.Shutdown(ctx)
	if err := <-again; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("the second Serve returned %v, want ErrServerClosed", err)
	}
}

// TestPathsPipePoolBounded: after more stalled flows at once than the pool keeps, the pipes
// beyond the pool's bound are closed, not kept.
func TestPathsPipePoolBounded(t *testing.T) {
	const n = maxFreePipes + 8
	payload := randomBytes(t, 256<<10)
	b := startBackend(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 512))
		c.Write(payload)
	})
	s := pathsServeOn(t, testConfig(), listenSmallSendBuffer(t), b.addr())
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
			if err != nil || !bytes.Equal(got, payload) {
				t.Errorf("read %d bytes (%v), want the %d sent, equal", len(got), err, len(payload))
			}
			c.Close()
		}()
	}
	wg.Wait()
	pathsWait(t, 3*time.Second, "every connection closed", func() bool { return s.Stats().Active == 0 })
	s.pipes.mu.Lock()
	free := len(s.pipes.free)
	s.pipes.mu.Unlock()
	if free > s.pipes.maxFree || s.pipes.maxFree > maxFreePipes {
		t.Fatalf("the pool keeps %d free pipes, want at most %d (of at most %d)", free, s.pipes.maxFree, maxFreePipes)
	}
	if p := s.Stats().PipesInUse; p > int64(len(s.loops)) {
		t.Fatalf("%d pipes in use with no connection", p)
	}
}

// pathsLimitFDs lets the process open k more descriptors; the next open fails with EMFILE.
// RLIMIT_NOFILE bounds descriptor numbers, not their count: the limit is set to the k+1th
// lowest free number. restore puts the limit back.
func pathsLimitFDs(t *testing.T, k int) (restore func()) {
	t.Helper()
	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	var free []int
	for range k + 1 {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // the lowest free number
		if err != nil {
			t.Fatal(err)
		}
		free = append(free, fd)
	}
	for _, fd := range free {
		unix.Close(fd)
	}
	lim := saved
	lim.Cur = uint64(free[k])
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	return func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &saved) }
}

// TestPathsOutOfDescriptors: New fails cleanly, whichever of a loop's descriptors it cannot
// get, and closes what the loops it made hold; a dial that cannot get a socket waits for
// one, is not a failed dial, and gives up after ConnectTimeout.
func TestPathsOutOfDescriptors(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	r, _ := ring.New(ring.Backend{ID: "b", Addr: "127.0.0.1:1"})
	cfg := testConfig()
	cfg.Ring, cfg.MaxConns = r, 10 // a limit of its own: none derived from the tiny open-files limit
	for k, what := range []string{"the first loop's epoll", "the first loop's eventfd", "the second loop's epoll"} {
		before := pathsFDs()
		restore := pathsLimitFDs(t, k)
		s, err := New(cfg)
		restore()
		if err == nil {
			s.Shutdown(context.Background())
			t.Fatalf("without %s: New succeeded", what)
		}
		if !errors.Is(err, syscall.EMFILE) {
			t.Fatalf("without %s: %v, want EMFILE", what, err)
		}
		if fresh := pathsNewFDs(before); len(fresh) != 0 {
			t.Fatalf("New failed without %s and left descriptors open: %v", what, fresh)
		}
	}

	var failures atomic.Int64
	cfg = testConfig()
	cfg.SniffTimeout = 100 * time.Millisecond
	cfg.OnDialFailure = func(ring.Backend) { failures.Add(1) }
	s := pathsStartServer(t, cfg, startBackend(t, pathsEcho).addr())
	c := pathsDial(t, s.addr, 5*time.Second)
	pathsWait(t, 3*time.Second, "the silent client accepted", func() bool {
		return pathsCount(s.Server, func(c *conn) bool { return c.phase == sniffing }) == 1
	})
	restore := pathsLimitFDs(t, 0)
	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().Active != 0 && time.Now().Before(deadline) { // nothing here may open a descriptor
		time.Sleep(2 * time.Millisecond)
	}
	restore()
	if n := failures.Load(); s.Stats().Active != 0 || n != 0 {
		t.Fatalf("with no descriptor for the backend socket: %d connections open, %d failed dials; want 0 and 0", s.Stats().Active, n)
	}
	c.Close()
}

// TestPathsNamedBackends: backend names looked up for real (localhost) and by a stand-in
// for DNS: a name that resolves to nothing and an address with a bad port are failed dials,
// as is a name of one address that refuses (with nowhere else to go); the next backend
// answers. A name whose first lookup hangs holds New for firstLookupWait, not longer, and
// Shutdown ends that lookup.
func TestPathsNamedBackends(t *testing.T) {
	live := startBackend(t, httpName("live"))
	_, port, _ := net.SplitHostPort(live.addr())
	t.Run("localhost", func(t *testing.T) {
		if status, body := get(t, pathsStartServer(t, testConfig(), "localhost:"+port).addr, ""); status != 200 || body != "live" {
			t.Fatalf("through localhost:%s: %d %q", port, status, body)
		}
	})

	saved := lookupIP
	t.Cleanup(func() { lookupIP = saved })
	lookupIP = func(ctx context.Context, _ *net.Resolver, host string) ([]netip.Addr, error) {
		switch host {
		case "one.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "hangs.test":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, nil // no error, no address
	}
	_, deadPort, _ := net.SplitHostPort(pathsDeadAddr(t))
	t.Run("failed dials", func(t *testing.T) {
		failed := map[string]int{}
		var mu sync.Mutex
		cfg := testConfig()
		cfg.OnDialFailure = func(b ring.Backend) { mu.Lock(); failed[b.Addr]++; mu.Unlock() }
		bad := []string{"empty.test:80", "127.0.0.1:0", "one.test:" + deadPort}
		s := pathsStartServer(t, cfg, append(bad, live.addr())...)
		for range 4 {
			if status, body := get(t, s.addr, ""); status != 200 || body != "live" {
				t.Fatalf("got %d %q, want 200 live", status, body)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for _, a := range bad {
			if failed[a] == 0 {
				t.Errorf("no failed dial reported for %s: %v", a, failed)
			}
		}
	})
	t.Run("first lookup hangs", func(t *testing.T) {
		start := time.Now()
		s := pathsStartServer(t, testConfig(), "hangs.test:80", live.addr())
		if d := time.Since(start); d < firstLookupWait || d > firstLookupWait+3*time.Second {
			t.Fatalf("New took %v with a lookup that hangs, want about %v", d, firstLookupWait)
		}
		if status, body := get(t, s.addr, ""); status != 200 || body != "live" {
			t.Fatalf("got %d %q, want 200 live", status, body)
		}
		start = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Shutdown took %v: it waited for the hanging lookup", d)
		}
	})
}

// TestPathsPumpHeadOnTheLoop: the sticky head's reader, run on the loop on a connection made
// by hand: a read that finds nothing waits, and an interim head for a client that reset
// closes the connection at its first write.
func TestPathsPumpHeadOnTheLoop(t *testing.T) {
	s := pathsStartServer(t, stickyConfig())
	l := s.loops[0]
	headConn := func(clientFD, backendFD int) *conn {
		c := spliceConn(l, end{fd: clientFD}, end{fd: backendFD})
		c.rh = l.respHeads.get()
		c.rh.setCookie = true
		return c
	}
	t.Run("nothing to read", func(t *testing.T) {
		clientFD, _ := pathsLoopPair(t)
		backendFD, _ := pathsLoopPair(t)
		var open bool
		var n int
		l.call(func() {
			c := headConn(clientFD, backendFD)
			if open = l.forward(c, backendSide, false); open {
				n = c.rh.buf.n
				l.close(c, nil)
			}
		})
		if !open || n != 0 {
			t.Fatalf("a head read that found nothing: open %v, %d bytes; want open, none", open, n)
		}
	})
	t.Run("interim head for a client that reset", func(t *testing.T) {
		clientFD, clientPeer := pathsLoopPair(t)
		backendFD, backendPeer := pathsLoopPair(t)
		pathsReset(clientPeer)
		pathsAwaitError(t, clientFD)
		io.WriteString(backendPeer, "HTTP/1.1 100 Continue\r\n\r\n")
		pathsWait(t, 3*time.Second, "the interim head at lb's socket", func() bool {
			n, _ := unix.IoctlGetInt(backendFD, unix.TIOCINQ)
			return n > 0
		})
		var open bool
		l.call(func() {
			c := headConn(clientFD, backendFD)
			if open = l.forward(c, backendSide, false); open {
				l.close(c, nil)
			}
		})
		if open {
			t.Fatal("an interim head could not be written to a client that reset, and the connection is open")
		}
		if _, err := io.ReadAll(backendPeer); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the backend: %v, want its end", err)
		}
	})
}

// pathsNewFDs lists the descriptors open now that were not in before.
func pathsNewFDs(before map[string]string) []string {
	var fresh []string
	for fd, what := range pathsFDs() {
		if before[fd] != what {
			fresh = append(fresh, fd+"="+what)
		}
	}
	return fresh
}
