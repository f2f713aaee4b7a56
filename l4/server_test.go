//go:build linux

package l4

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"lb/metrics"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"lb/ring"
)

// backend is a TCP server on loopback run by a test; handle runs once per connection.
type testBackend struct {
	ln    net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

func startBackend(t testing.TB, handle func(c *net.TCPConn)) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startBackendOn(t, ln, handle)
}

// startBackendOn is startBackend on a listener of the test's making (small buffers, say).
func startBackendOn(t testing.TB, ln net.Listener, handle func(c *net.TCPConn)) *testBackend {
	t.Helper()
	b := &testBackend{ln: ln}
	b.wg.Add(1)
	go b.serve(handle)
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func (b *testBackend) serve(handle func(c *net.TCPConn)) {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.conns.Add(1)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			handle(c.(*net.TCPConn))
		}()
	}
}

func (b *testBackend) addr() string { return b.ln.Addr().String() }

// echo copies everything back, then closes its write side at EOF.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// httpName answers every HTTP request on the connection with name.
func httpName(name string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(name), name)
		}
	}
}

type testServer struct {
	*Server
	addr string
	ring *ring.Ring
}

// testConfig is a small server's config, on the engine LB_ENGINE names (the default's: auto),
// so the suite runs on each engine in turn (.ci/run).
func testConfig() Config {
	engine, err := ParseEngine(cmp.Or(os.Getenv("LB_ENGINE"), "auto"))
	if err != nil {
		panic(err)
	}
	return Config{
		Engine:         engine,
		SniffTimeout:   time.Second,
		MaxHeaderBytes: 16 << 10,
		ConnectTimeout: time.Second,
		IdleTimeout:    time.Minute,
		Log:            zerolog.Nop(),
	}
}

func startServer(t *testing.T, cfg Config, addrs ...string) *testServer {
	t.Helper()
	return serveOn(t, cfg, listenLoopback(t), addrs...)
}

// listenLoopback listens on a free port of 127.0.0.1.
func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveOn is startServer on a listener of the test's making.
func serveOn(t testing.TB, cfg Config, ln net.Listener, addrs ...string) *testServer {
	t.Helper()
	var backends []ring.Backend
	for i, a := range addrs {
		backends = append(backends, ring.Backend{ID: fmt.Sprintf("b%d", i), Addr: a, Weight: 1})
	}
	r, err := ring.New(backends...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ring = r
	s, err := New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if n := s.badMoves.Load(); n != 0 {
			t.Errorf("connections took %d transitions that the phase table does not have", n)
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String(), ring: r}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioDeadline))
	return c.(*net.TCPConn)
}

// ioDeadline bounds every read and write of a test's client connection: a bug that leaves a
// connection hanging fails its test in seconds, while a slow machine (-race, CPUs busy) still
// has ample time for what a test sends.
const ioDeadline = 10 * time.Second

func get(t *testing.T, addr, extra string) (status int, body string) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n%s\r\n", extra)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// spliceConn makes, on l (call it there), a connection in the splicing phase over two raw
// sockets, counted as the server counts an accepted one, so that a test can pump it directly
// and close it as lb would.
func spliceConn(l *loop, clientEnd, backendEnd end) *conn {
	l.s.active.Add(1)
	l.s.conns.Add(1)
	c := l.conns.add()
	c.lc = l.stats.listener(nil) // as admit gives it one
	c.ends[clientSide], c.ends[backendSide] = clientEnd, backendEnd
	c.phase, c.pool = splicing, (*l.s.pools.Load())[0] // the sweep reads its pool's idle timeout
	return c
}

// writeThenHalfClose writes payload to c and shuts its write side, on a goroutine of its own,
// so that the test can read meanwhile; the channel gets the first error, or nil.
func writeThenHalfClose(c *net.TCPConn, payload []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	return done
}

// unreadBytes is how many bytes wait in c's receive queue.
func unreadBytes(t *testing.T, c *net.TCPConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundRobinOneBackendPerConnection(t *testing.T) {
	names := []string{"a", "b", "c"}
	var addrs []string
	for _, n := range names {
		addrs = append(addrs, startBackend(t, httpName(n)).addr())
	}
	s := startServer(t, testConfig(), addrs...)
	var got []string
	for range 9 {
		_, body := get(t, s.addr, "Connection: close\r\n")
		got = append(got, body)
	}
	if want := "abcabcabc"; strings.Join(got, "") != want {
		t.Fatalf("rotation %q, want %q", strings.Join(got, ""), want)
	}

	// Keep-alive: every request on one connection reaches the backend chosen for it.
	c := dial(t, s.addr)
	br := bufio.NewReader(c)
	var first string
	for i := range 5 {
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: t\r\n\r\n", i)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if i == 0 {
			first = string(b)
		} else if string(b) != first {
			t.Fatalf("request %d went to %q, the connection's backend is %q", i, b, first)
		}
	}
}

// TestBytesExactBothWaysUnderBackpressure sends more than the socket buffers hold before
// reading anything back, so both flows stall on full sockets and resume.
func TestBytesExactBothWaysUnderBackpressure(t *testing.T) {
	b := startBackend(t, echo)
	s := startServer(t, testConfig(), b.addr())
	const size = 8 << 20
	payload := randomBytes(t, size)

	c := dial(t, s.addr)
	writeErr := writeThenHalfClose(c, payload)
	// Let the writer run ahead until the flow back stalls: the client's receive queue, unread,
	// stops growing, so lb's sends to it find its buffers full (short sends, held pipes and
	// buffers). Then read it all back.
	queued, since := -1, time.Now()
	waitFor(t, "the flow back to the client to stall", func() bool {
		if n := unreadBytes(t, c); n != queued {
			queued, since = n, time.Now()
		}
		return queued > 0 && time.Since(since) >= 50*time.Millisecond
	})
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo through lb: got %d bytes, different from the %d sent", len(got), size)
	}
	// On epoll a bulk flow is spliced: all but its first reads (the sniffed head, the reads
	// that find it bulk) went through splice(2), both ways. (On io_uring it is received and
	// sent from provided buffers.)
	if st, want := s.Stats(), uint64(2*size*95/100); s.Engine() == EngineEpoll && st.SplicedBytes < want {
		t.Fatalf("spliced %d bytes, want at least %d", st.SplicedBytes, want)
	}
	waitFor(t, "connection closed and pipes back", func() bool {
		st := s.Stats()
		return st.Active == 0 && st.PipesInUse <= int64(len(s.loops))
	})
}

// TestHalfCloseGetsWholeAnswer: the backend answers only after it sees the client's FIN.
func TestHalfCloseGetsWholeAnswer(t *testing.T) {
	answer := randomBytes(t, 1<<20)
	b := startBackend(t, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d\n", n)
		c.Write(answer)
	})
	s := startServer(t, testConfig(), b.addr())
	c := dial(t, s.addr)
	req := "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
	io.WriteString(c, req)
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(fmt.Sprintf("%d\n", len(req))), answer...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
}

func TestFailedDialTriesNextBackend(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	live := startBackend(t, httpName("live"))
	var failures atomic.Int64
	cfg := testConfig()
	cfg.OnDialFailure = func(b ring.Backend) {
		if b.Addr == deadAddr {
			failures.Add(1)
		}
	}
	s := startServer(t, cfg, deadAddr, live.addr())
	for range 6 {
		if status, body := get(t, s.addr, ""); status != 200 || body != "live" {
			t.Fatalf("got %d %q, want 200 live", status, body)
		}
	}
	if failures.Load() != 3 {
		t.Fatalf("OnDialFailure heard %d failures of the dead backend, want 3", failures.Load())
	}
}

func TestNoBackendAnswers503Or502(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	s := startServer(t, testConfig(), deadAddr)
	status, body := get(t, s.addr, "")
	if status != http.StatusBadGateway || body == "" {
		t.Fatalf("every dial failed: got %d %q, want 502", status, body)
	}

	s.ring.SetUp("b0", false)
	c := dial(t, s.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Fatalf("none up: got %d close=%v, want 503 with Connection: close", resp.StatusCode, resp.Close)
	}

	// A head cut short by the sniff timeout is still an HTTP client's.
	cfg := testConfig()
	cfg.SniffTimeout = 50 * time.Millisecond
	slow := startServer(t, cfg, deadAddr)
	slow.ring.SetUp("b0", false)
	c = dial(t, slow.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("partial head, none up: got %v, %v; want 503", resp, err)
	}

	// A client that is not HTTP is just closed.
	c = dial(t, s.addr)
	c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5})
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("non-HTTP client with no backend: read %q, %v; want a plain close", b, err)
	}
	snap := collect(s.Server)
	if snap.Refused[metrics.RefuseDialFailed] != 1 || snap.Refused[metrics.RefuseNoneUp] != 2 ||
		snap.Answers[metrics.Answer502] != 1 || snap.Answers[metrics.Answer503] != 1 {
		t.Fatalf("refused %v, answers %v: want one 502 (dial failed), and two refused with none up, one of them answered 503", snap.Refused, snap.Answers)
	}
}

// TestUnparsedFirstBytesPassThrough: whatever the sniffer makes of the first bytes, the
// backend gets all of them, in order.
func TestUnparsedFirstBytesPassThrough(t *testing.T) {
	b := startBackend(t, echo)
	cfg := testConfig()
	cfg.MaxHeaderBytes = 1024
	cfg.SniffTimeout = 100 * time.Millisecond
	s := startServer(t, cfg, b.addr())
	cases := map[string][]byte{
		"tls":       append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, randomBytes(t, 600)...),
		"ssh":       []byte("SSH-2.0-OpenSSH_9.2\r\n"),
		"http2":     []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04"),
		"malformed": []byte("GET / HTTP/9.9\r\n\x00\x01\r\n\r\n"),
		"oversized": []byte("GET / HTTP/1.1\r\nCookie: " + strings.Repeat("x", 4000) + "\r\n\r\n"),
		"slow":      []byte("GET / HTTP/1.1\r\nHost: never-finished\r\n"),
	}
	for name, first := range cases {
		t.Run(name, func(t *testing.T) {
			c := dial(t, s.addr)
			c.Write(first)
			got := make([]byte, len(first))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, first) {
				t.Fatalf("echoed %q, sent %q", got, first)
			}
		})
	}
}

func TestServerSpeaksFirst(t *testing.T) {
	b := startBackend(t, func(c *net.TCPConn) { io.WriteString(c, "220 hello\r\n"); io.Copy(io.Discard, c) })
	cfg := testConfig()
	cfg.SniffTimeout = 50 * time.Millisecond
	s := startServer(t, cfg, b.addr())
	c := dial(t, s.addr)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "220 hello\r\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
}

func TestIdleTimeoutClosesSilentConnections(t *testing.T) {
	b := startBackend(t, echo)
	cfg := testConfig()
	cfg.IdleTimeout = 100 * time.Millisecond
	s := startServer(t, cfg, b.addr())
	c := dial(t, s.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	start := time.Now()
	c.SetReadDeadline(start.Add(3 * time.Second)) // the close must reach the client, not only lb's count
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", d)
	}
	if s.Stats().IdleTimeouts != 1 {
		t.Fatalf("IdleTimeouts = %d, want 1", s.Stats().IdleTimeouts)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// TestIdleConnectionsHoldTwoDescriptors: once routed and quiet, a connection holds its two
// sockets and nothing else: no pipe, no goroutine.
func TestIdleConnectionsHoldTwoDescriptors(t *testing.T) {
	const n = 200
	b := startBackend(t, httpName("x"))
	s := startServer(t, testConfig(), b.addr())
	waitFor(t, "engine idle", func() bool { return s.Stats().Active == 0 })
	fdsBefore := countFDs(t)
	for range n {
		c := dial(t, s.addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "backends accepted", func() bool { return b.conns.Load() == n })
	// Per held connection: the test's client socket, the backend's accepted socket, and lb's
	// two. Each loop may also have created its one hot pipe (two descriptors).
	perConn := float64(countFDs(t)-fdsBefore-2*n-2*len(s.loops)) / n
	if perConn > 2 {
		t.Fatalf("lb holds %.2f descriptors per idle connection, want at most 2", perConn)
	}
	if p := s.Stats().PipesInUse; p > int64(len(s.loops)) {
		t.Fatalf("%d pipes in use with every connection idle; want at most one per loop (%d)", p, len(s.loops))
	}
}

func TestShutdownDrainsThenCuts(t *testing.T) {
	release := make(chan struct{})
	b := startBackend(t, func(c *net.TCPConn) {
		buf := make([]byte, 64)
		c.Read(buf)
		<-release
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone")
	})
	cfg := testConfig()
	r, _ := ring.New(ring.Backend{ID: "b", Addr: b.addr()})
	cfg.Ring = r
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	inflight := dial(t, ln.Addr().String())
	io.WriteString(inflight, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	waitFor(t, "request at the backend", func() bool { return s.Stats().Active == 1 && b.conns.Load() == 1 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(context.Background()) }()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("a new connection was accepted after Shutdown")
	}
	close(release)
	body, err := io.ReadAll(inflight)
	if err != nil || !bytes.HasSuffix(body, []byte("done")) {
		t.Fatalf("in-flight request: %q, %v", body, err)
	}
	inflight.Close() // the client's FIN ends the connection's last direction
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown after the drain: %v", err)
	}

	// A connection that never ends is cut when the drain deadline passes.
	s2 := startServer(t, testConfig(), startBackend(t, echo).addr())
	idle := dial(t, s2.addr)
	io.WriteString(idle, "x")
	io.ReadFull(idle, make([]byte, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s2.Server.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown of a never-ending connection: %v, want DeadlineExceeded", err)
	}
	if _, err := io.ReadAll(idle); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("cut connection: %v", err)
	}
}

// TestAcceptBacksOffOnEMFILE: accept fails with EMFILE for 100 ms, as in a process out of
// descriptors. The loops must back off (5 ms doubling) rather than spin, then serve.
func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	var mu sync.Mutex
	var failures []time.Time
	real := accept4
	accept4 = func(lfd int, sa *unix.RawSockaddrAny) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) == 0 || time.Since(failures[0]) < 100*time.Millisecond {
			failures = append(failures, time.Now())
			return -1, syscall.EMFILE
		}
		return real(lfd, sa)
	}
	t.Cleanup(func() { accept4 = real }) // after the server's Shutdown: cleanups run last-in first-out

	b := startBackend(t, httpName("ok"))
	s := startServer(t, testConfig(), b.addr())
	if status, body := get(t, s.addr, ""); status != 200 || body != "ok" {
		t.Fatalf("after EMFILE: %d %q", status, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) == 0 {
		t.Fatal("no accept failed with EMFILE: the test proves nothing")
	}
	// Per loop: failures at 0, 5, 15, 35, 75 ms, then one more at most in the 100 ms. A slow
	// machine only makes fewer.
	if max := 6 * len(s.loops); len(failures) > max {
		t.Fatalf("%d failed accepts in 100 ms, want at most %d: the loop spins", len(failures), max)
	}
}

// TestServeAfterShutdown: a listener handed to a server already shut down is closed, so
// clients are refused rather than queued for an accept that never comes; and a Shutdown with
// nothing open reports nothing cut, even with its context already done.
func TestServeAfterShutdown(t *testing.T) {
	r, _ := ring.New(ring.Backend{ID: "b0", Addr: "127.0.0.1:1"})
	cfg := testConfig()
	cfg.Ring = r
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(done); err != nil {
		t.Fatalf("Shutdown with nothing open and a done context: %v, want nil", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v, want ErrServerClosed", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener given to Serve after Shutdown still accepts connections")
	}
}
