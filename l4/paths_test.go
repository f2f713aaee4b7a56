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
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lb/ring"
)

// The data-path promises of README that no other test runs: a client that ends its side
// after a partial head, the SO_ERROR redial of a silent client, resets in the middle of a
// transfer, a pipe that holds bytes when its connection closes, the refuse wait, heads that
// cannot be parsed with no backend up, IPv6, an idle timeout of 0 and two loops.
//
// Bounds here are a few seconds: a planted bug must fail its test quickly, not at the 20 s
// i/o deadline of dial. Helpers are prefixed paths so as not to clash with other files'.

// pathsWait polls cond until it holds, failing the test after within.
func pathsWait(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pathsStartServer is startServer, shut down at the end of the test with 1 s, not 5 s, for
// its connections to finish: a planted bug that leaves one open fails its test sooner.
func pathsStartServer(t *testing.T, cfg Config, addrs ...string) *testServer {
	t.Helper()
	return pathsServeOn(t, cfg, listenLoopback(t), addrs...)
}

// pathsServeOn is serveOn with pathsStartServer's shorter shutdown.
func pathsServeOn(t *testing.T, cfg Config, ln net.Listener, addrs ...string) *testServer {
	t.Helper()
	s := serveOn(t, cfg, ln, addrs...)
	t.Cleanup(func() { // before serveOn's, whose Shutdown then finds this one done
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

// pathsDeadAddr is a loopback address nothing listens on: a dial to it is refused.
func pathsDeadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// pathsDial connects to addr with every i/o bounded by within.
func pathsDial(t *testing.T, addr string, within time.Duration) *net.TCPConn {
	t.Helper()
	c := dial(t, addr)
	c.SetDeadline(time.Now().Add(within))
	return c
}

// pathsReset closes c with an RST rather than a FIN.
func pathsReset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// pathsEcho copies everything back through a buffer, then half-closes at EOF. Not io.Copy of
// the conn to itself: Go would splice through pipes of its own, kept until a GC, and the
// descriptor checks would count them.
func pathsEcho(c *net.TCPConn) {
	io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 32<<10))
	c.CloseWrite()
}

// pathsFDs maps the process's descriptors to what they are.
func pathsFDs() map[string]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	fds := map[string]string{}
	for _, e := range ents {
		if what, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			fds[e.Name()] = what
		}
	}
	return fds
}

// pathsSnapshot is the process's descriptors before a test's connections.
type pathsSnapshot struct{ fds map[string]string }

func pathsBefore(*Server) pathsSnapshot { return pathsSnapshot{fds: pathsFDs()} }

// pathsNoLeak waits until s holds no connection, no pipe in use but its loops' hot ones, and no
// descriptor that was not open at before but for its pipes (hot, or kept for reuse). The test
// must have closed its own sockets, and its backends theirs. Descriptors that closed since
// before do not count: Go's own splice pipes, cached by earlier tests, close at a GC.
func pathsNoLeak(t *testing.T, s *Server, before pathsSnapshot) {
	t.Helper()
	var last string
	deadline := time.Now().Add(3 * time.Second)
	for {
		st := s.Stats()
		// With no connection, the pipes in use are the loops' hot ones, no other.
		ours, hot := map[string]bool{}, 0
		for _, l := range s.loops {
			l.call(func() {
				if l.pipes.hot != nil {
					hot++
					ours[strconv.Itoa(l.pipes.hot.r)], ours[strconv.Itoa(l.pipes.hot.w)] = true, true
				}
			})
		}
		s.pipes.mu.Lock()
		for _, p := range s.pipes.free {
			ours[strconv.Itoa(p.r)], ours[strconv.Itoa(p.w)] = true, true
		}
		s.pipes.mu.Unlock()
		var strays []string
		for fd, what := range pathsFDs() {
			if before.fds[fd] != what && !ours[fd] {
				strays = append(strays, fd+"="+what)
			}
		}
		if st.Active == 0 && st.PipesInUse == int64(hot) && len(strays) == 0 {
			return
		}
		last = fmt.Sprintf("active %d, pipes in use %d (hot: %d), new descriptors not lb's pipes: %v", st.Active, st.PipesInUse, hot, strays)
		if time.Now().After(deadline) {
			t.Fatalf("lb still holds more than it should: %s", last)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pathsCPU is the CPU time the process has used so far.
func pathsCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pathsNoSpin fails the test if the process burns more than a third of a CPU over window
// while nothing is to be done.
func pathsNoSpin(t *testing.T, what string) {
	t.Helper()
	const window = 300 * time.Millisecond
	before := pathsCPU()
	<-time.After(window)
	if used := pathsCPU() - before; used > window/3 {
		t.Errorf("the process used %v of CPU in %v while %s: a loop spins", used, window, what)
	}
}

// pathsConns runs fn on every connection of s, on its loop.
func pathsConns(s *Server, fn func(l *loop, c *conn)) {
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil {
					fn(l, c)
				}
			}
		})
	}
}

// pathsCount counts the connections of s for which cond holds.
func pathsCount(s *Server, cond func(c *conn) bool) int {
	n := 0
	pathsConns(s, func(_ *loop, c *conn) {
		if cond(c) {
			n++
		}
	})
	return n
}

// pathsStalled reports whether a flow of s holds bytes its destination has not taken.
func pathsStalled(c *conn) bool {
	return c.phase == splicing && (c.ends[clientSide].pending > 0 || c.ends[backendSide].pending > 0)
}

// TestPathsClientEndsAfterPartialHead: a client that sends part of a head and then shuts its
// write side still gets its answer, at once rather than at the sniff timeout; one that closes
// outright is still routed, and the backend gets every byte it sent; one that closes having
// sent nothing is not routed at all.
func TestPathsClientEndsAfterPartialHead(t *testing.T) {
	partial := "GET / HTTP/1.1\r\nHost: t\r\nX-Cut: "
	got := make(chan string, 4)
	b := startBackend(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		in, _ := io.ReadAll(c)
		got <- string(in)
		fmt.Fprintf(c, "read %d bytes", len(in))
	})
	cfg := testConfig()
	cfg.SniffTimeout = time.Minute // only the client's FIN can end the sniff within the test
	s := pathsStartServer(t, cfg, b.addr())

	t.Run("half-close", func(t *testing.T) {
		c := pathsDial(t, s.addr, 3*time.Second)
		io.WriteString(c, partial)
		c.CloseWrite()
		answer, err := io.ReadAll(c)
		if want := fmt.Sprintf("read %d bytes", len(partial)); err != nil || string(answer) != want {
			t.Fatalf("answer %q, %v; want %q", answer, err, want)
		}
		if in := <-got; in != partial {
			t.Fatalf("the backend read %q, want %q", in, partial)
		}
	})
	t.Run("close", func(t *testing.T) {
		c := pathsDial(t, s.addr, 3*time.Second)
		io.WriteString(c, partial)
		c.Close()
		select {
		case in := <-got:
			if in != partial {
				t.Fatalf("the backend read %q, want %q", in, partial)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the partial head of a client that closed never reached the backend")
		}
		pathsWait(t, 3*time.Second, "the connection closed", func() bool { return s.Stats().Active == 0 })
	})
	t.Run("nothing", func(t *testing.T) {
		before := b.conns.Load()
		c := pathsDial(t, s.addr, 3*time.Second)
		pathsWait(t, 3*time.Second, "the connection accepted", func() bool { return s.Stats().Active == 1 })
		c.Close()
		pathsWait(t, 3*time.Second, "the connection closed", func() bool { return s.Stats().Active == 0 })
		if n := b.conns.Load() - before; n != 0 {
			t.Fatalf("a client that closed without a byte was routed: the backend got %d connections", n)
		}
	})
	t.Run("none up", func(t *testing.T) {
		s.ring.SetUp("b0", false)
		defer s.ring.SetUp("b0", true)
		c := pathsDial(t, s.addr, 3*time.Second)
		io.WriteString(c, partial)
		c.CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("partial head, half-closed, no backend up: %v, %v; want 503", resp, err)
		}
	})
}

// TestPathsSilentClientRedialsOnSocketError: a client that sends nothing is routed at the
// sniff timeout with nothing to replay, so the dial's failure is found by SO_ERROR once the
// socket is writable, not by a write: the next backend is dialed and its greeting reaches
// the client.
func TestPathsSilentClientRedialsOnSocketError(t *testing.T) {
	dead := pathsDeadAddr(t)
	greeter := startBackend(t, func(c *net.TCPConn) {
		io.WriteString(c, "220 hello\r\n")
		io.Copy(io.Discard, c)
	})
	var failures atomic.Int64
	cfg := testConfig()
	cfg.SniffTimeout = 30 * time.Millisecond
	cfg.OnDialFailure = func(b ring.Backend) {
		if b.Addr == dead {
			failures.Add(1)
		}
	}
	s := pathsStartServer(t, cfg, dead, greeter.addr())
	for i := range 4 { // the ring starts at the dead backend every other connection
		c := pathsDial(t, s.addr, 3*time.Second)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "220 hello\r\n" {
			t.Fatalf("connection %d: read %q, %v; want the second backend's greeting", i, line, err)
		}
		c.Close()
	}
	if n := failures.Load(); n != 2 {
		t.Fatalf("OnDialFailure heard %d failures of the dead backend, want 2", n)
	}
}

// TestPathsResetMidStream: a peer that resets in the middle of a transfer, either way: lb
// closes the other side, at once, frees what the connection held and does not spin.
func TestPathsResetMidStream(t *testing.T) {
	big := randomBytes(t, 4<<20)
	t.Run("backend resets while sending", func(t *testing.T) {
		sent := make(chan int, 1)
		b := startBackend(t, func(c *net.TCPConn) {
			c.Read(make([]byte, 512))
			n, _ := c.Write(big[:1<<20])
			sent <- n
			pathsReset(c)
		})
		s := pathsStartServer(t, testConfig(), b.addr())
		before := pathsBefore(s.Server)
		c := pathsDial(t, s.addr, 5*time.Second)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		got, _ := io.ReadAll(c) // EOF or a reset: either way the stream ended
		n := <-sent
		if len(got) > n || !bytes.Equal(got, big[:len(got)]) {
			t.Fatalf("read %d bytes that are not a prefix of the %d sent", len(got), n)
		}
		pathsWait(t, 3*time.Second, "lb to close the client's connection", func() bool { return s.Stats().Active == 0 })
		c.Close()
		pathsNoLeak(t, s.Server, before)
	})
	t.Run("client resets while receiving", func(t *testing.T) {
		ended := make(chan error, 1)
		b := startBackend(t, func(c *net.TCPConn) {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 512))
			var err error
			for err == nil {
				_, err = c.Write(big)
			}
			ended <- err
		})
		s := pathsStartServer(t, testConfig(), b.addr())
		before := pathsBefore(s.Server)
		c := pathsDial(t, s.addr, 5*time.Second)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		io.ReadFull(c, make([]byte, 256<<10))
		pathsReset(c)
		if err := <-ended; errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the backend's writes went on: lb did not close its side (%v)", err)
		}
		pathsNoLeak(t, s.Server, before)
	})
	t.Run("client resets after its FIN", func(t *testing.T) {
		release := make(chan struct{})
		var once sync.Once
		releaseBackend := func() { once.Do(func() { close(release) }) }
		b := startBackend(t, func(c *net.TCPConn) {
			io.Copy(io.Discard, c) // to the client's FIN; then no answer
			<-release
		})
		defer releaseBackend() // before the backend's cleanup waits for its handler
		s := pathsStartServer(t, testConfig(), b.addr())
		before := pathsBefore(s.Server)
		c := pathsDial(t, s.addr, 5*time.Second)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		c.CloseWrite()
		pathsWait(t, 3*time.Second, "the client's FIN at lb", func() bool {
			return pathsCount(s.Server, func(c *conn) bool { return c.ends[clientSide].eof }) == 1
		})
		pathsReset(c)
		pathsWait(t, 3*time.Second, "lb to close the connection", func() bool { return s.Stats().Active == 0 })
		releaseBackend()
		pathsNoSpin(t, "no connection is open")
		pathsNoLeak(t, s.Server, before)
	})
}

// pathsStalledConn opens a connection through s whose client does not read, to a backend
// that sends until lb's flow to the client holds bytes in a pipe. The backend's handler
// sends what it wrote on wrote when it is done, and returns when release is closed.
// before lists the descriptors open before the connection, for pathsNoLeak.
func pathsStalledConn(t *testing.T, cfg Config, payload []byte) (s *testServer, c *net.TCPConn, wrote <-chan []byte, release chan struct{}, before pathsSnapshot) {
	t.Helper()
	w := make(chan []byte, 1)
	release = make(chan struct{})
	var srv atomic.Pointer[Server]
	b := startBackend(t, func(c *net.TCPConn) {
		defer func() { <-release; c.SetLinger(0) }() // then a reset, if lb has not closed first
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 512))
		sent := 0
		for sent < len(payload) && (sent < 64<<10 || pathsCount(srv.Load(), pathsStalled) == 0) {
			n, err := c.Write(payload[sent : sent+8<<10])
			sent += n
			if err != nil {
				break
			}
		}
		w <- payload[:sent]
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	s = pathsServeOn(t, cfg, listenSmallSendBuffer(t), b.addr())
	srv.Store(s.Server)
	before = pathsBefore(srv.Load())
	c = dialSmallWindow(t, s.addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	pathsWait(t, 3*time.Second, "a flow holding bytes in a pipe", func() bool { return pathsCount(s.Server, pathsStalled) == 1 })
	return s, c, w, release, before
}

// TestPathsClosedWithBytesInThePipe: a flow whose destination does not read holds the
// rest in a pipe. When its connection closes (the idle timeout, the destination's reset),
// the pipe and what it holds are discarded: no pipe or descriptor stays behind. When the
// source resets instead, the destination still gets every byte lb took, then the end.
func TestPathsClosedWithBytesInThePipe(t *testing.T) {
	payload := randomBytes(t, 4<<20)
	t.Run("idle timeout", func(t *testing.T) {
		cfg := testConfig()
		cfg.IdleTimeout = 300 * time.Millisecond
		s, c, _, release, before := pathsStalledConn(t, cfg, payload)
		pathsWait(t, 3*time.Second, "the idle timeout to close the stalled connection", func() bool { return s.Stats().Active == 0 })
		if n := s.Stats().IdleTimeouts; n != 1 {
			t.Fatalf("IdleTimeouts = %d, want 1", n)
		}
		c.Close()
		close(release)
		pathsNoLeak(t, s.Server, before)
	})
	t.Run("destination resets", func(t *testing.T) {
		s, c, _, release, before := pathsStalledConn(t, testConfig(), payload)
		pathsReset(c)
		pathsWait(t, 3*time.Second, "lb to close the connection", func() bool { return s.Stats().Active == 0 })
		close(release)
		pathsNoLeak(t, s.Server, before)
	})
	t.Run("source resets", func(t *testing.T) {
		s, c, wrote, release, before := pathsStalledConn(t, testConfig(), payload)
		sent := <-wrote
		close(release) // the handler returns and resets its connection
		got, _ := io.ReadAll(c)
		if len(got) > len(sent) || !bytes.Equal(got, sent[:len(got)]) {
			t.Fatalf("read %d bytes that are not a prefix of the %d sent", len(got), len(sent))
		}
		if len(got) == 0 {
			t.Fatal("the client got none of the bytes lb held for it")
		}
		pathsWait(t, 3*time.Second, "lb to close the connection", func() bool { return s.Stats().Active == 0 })
		c.Close()
		pathsNoLeak(t, s.Server, before)
	})
}

// TestPathsRefuseWaitExpires: a client answered 503 that never closes is closed once
// refuseWait has passed (what it sends meanwhile is read and dropped); one that closes is
// let go at once.
func TestPathsRefuseWaitExpires(t *testing.T) {
	s := pathsStartServer(t, testConfig(), pathsDeadAddr(t))
	s.ring.SetUp("b0", false)
	refused := func() (*net.TCPConn, time.Time) {
		c := pathsDial(t, s.addr, 5*time.Second)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("no backend up: %v, %v; want 503", resp, err)
		}
		at := time.Now()
		if _, err := io.ReadAll(br); err != nil {
			t.Fatalf("after the 503: %v, want lb's FIN", err)
		}
		return c, at
	}

	c, at := refused()
	io.WriteString(c, "GET /more HTTP/1.1\r\nHost: t\r\n\r\n") // read and dropped
	pathsWait(t, refuseWait+3*time.Second, "lb to close a refused client that stays", func() bool { return s.Stats().Active == 0 })
	if waited := time.Since(at); waited < refuseWait*9/10 {
		t.Fatalf("a refused client was closed after %v, before refuseWait (%v)", waited, refuseWait)
	}
	c.Close()

	c, at = refused()
	c.Close()
	pathsWait(t, 3*time.Second, "lb to close a refused client that closed", func() bool { return s.Stats().Active == 0 })
	if waited := time.Since(at); waited >= refuseWait {
		t.Fatalf("a refused client that closed was let go after %v: lb waited for refuseWait", waited)
	}

	// More than one drain takes (16 reads of 512 bytes), then its close: lb hears the rest
	// and the close without waiting for refuseWait.
	c, at = refused()
	c.Write(make([]byte, 32<<10))
	c.CloseWrite()
	pathsWait(t, 3*time.Second, "lb to close a refused client that sent more and closed", func() bool { return s.Stats().Active == 0 })
	if waited := time.Since(at); waited >= refuseWait {
		t.Fatalf("a refused client that sent 32 KiB and closed was let go after %v: lb waited for refuseWait", waited)
	}
	c.Close()
}

// TestPathsUnparsedHeadWithNoBackendGets503: a head too large for the sniff buffer, or
// malformed, began like an HTTP request: with no backend up its client gets 503.
func TestPathsUnparsedHeadWithNoBackendGets503(t *testing.T) {
	cfg := testConfig()
	cfg.MaxHeaderBytes = 1024
	s := pathsStartServer(t, cfg, pathsDeadAddr(t))
	s.ring.SetUp("b0", false)
	for name, head := range map[string]string{
		"oversized": "GET / HTTP/1.1\r\nHost: t\r\nCookie: " + strings.Repeat("x", 4000) + "\r\n\r\n",
		"malformed": "GET / HTTP/9.9\r\n\x00\x01\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := pathsDial(t, s.addr, 5*time.Second)
			io.WriteString(c, head)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("%s head, no backend up: %v, %v; want 503", name, resp, err)
			}
		})
	}
}

// TestPathsIPv6: a listener and a backend on ::1; bytes exact both ways.
func TestPathsIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	bln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		ln.Close()
		t.Skip("no IPv6 loopback:", err)
	}
	b := &testBackend{ln: bln}
	b.wg.Add(1)
	go b.serve(pathsEcho)
	t.Cleanup(func() { bln.Close(); b.wg.Wait() })
	lines, log := pathsDebugLog()
	cfg := testConfig()
	cfg.Log = log
	s := pathsServeOn(t, cfg, ln, b.addr())

	payload := append([]byte("POST / HTTP/1.1\r\nHost: t\r\n\r\n"), randomBytes(t, 2<<20)...)
	c := pathsDial(t, s.addr, 5*time.Second)
	go func() { c.Write(payload); c.CloseWrite() }()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo over [::1]: %d bytes (%v), want the %d sent, equal", len(got), err, len(payload))
	}
	if b.conns.Load() != 1 {
		t.Fatalf("the IPv6 backend had %d connections, want 1", b.conns.Load())
	}
	// The client's FIN came first: lb closes once the backend's is in, its client still there.
	pathsWait(t, 3*time.Second, "the connection's debug line", func() bool { return pathsLine(lines, "connection closed") != nil })
	if m := pathsLine(lines, "connection closed"); m["client"] != c.LocalAddr().String() {
		t.Fatalf("the debug line names the client %v, want %s", m["client"], c.LocalAddr())
	}
}

// TestPathsIdleTimeoutZeroNeverCloses: with IdleTimeout 0 a quiet connection stays open
// however many sweeps pass (they come every 5 ms with these timeouts).
func TestPathsIdleTimeoutZeroNeverCloses(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTimeout = 0
	cfg.SniffTimeout, cfg.ConnectTimeout = 20*time.Millisecond, 20*time.Millisecond
	s := pathsStartServer(t, cfg, startBackend(t, pathsEcho).addr())
	c := pathsDial(t, s.addr, 5*time.Second)
	roundTrip := func(msg string) {
		t.Helper()
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q, %v; want %q", got, err, msg)
		}
	}
	roundTrip("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	var quietSince int64
	pathsConns(s.Server, func(_ *loop, c *conn) { quietSince = c.lastActive })
	const sweeps = 40
	every := pathsLoopSweepEvery(s.Server)
	pathsWait(t, 5*time.Second, fmt.Sprintf("%d sweeps of every loop", sweeps), func() bool {
		swept := true
		for _, l := range s.loops {
			l.call(func() { swept = swept && l.nextSweep-quietSince > int64(sweeps*every) })
		}
		return swept
	})
	if st := s.Stats(); st.Active != 1 || st.IdleTimeouts != 0 {
		t.Fatalf("after %d sweeps with IdleTimeout 0: %+v, want the connection open", sweeps, st)
	}
	roundTrip("still there")
}

func pathsLoopSweepEvery(s *Server) time.Duration { return s.loops[0].sweepEvery() }

// TestPathsTwoLoops: with GOMAXPROCS 2 a server runs two loops, and both accept from its
// listener and serve: while one is held busy, the other takes every new connection (which
// loop wins an accept when both are free is up to the scheduler, so the test decides it).
// Then every byte of every connection arrives, both loops working at once.
func TestPathsTwoLoops(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	s := pathsStartServer(t, testConfig(), startBackend(t, pathsEcho).addr(), startBackend(t, pathsEcho).addr())
	if len(s.loops) != 2 {
		t.Fatalf("%d loops with GOMAXPROCS 2, want 2", len(s.loops))
	}
	pathsWait(t, 3*time.Second, "both loops listening", func() bool { // Serve tells them in turn
		listening := 0
		for _, l := range s.loops {
			l.call(func() { listening += len(l.acc.lfds) })
		}
		return listening == len(s.loops)
	})
	const n = 64
	conns := make([]*net.TCPConn, n)
	routed := func(l *loop) (k int) {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil && c.phase == splicing {
					k++
				}
			}
		})
		return k
	}
	for i, l := range s.loops {
		held, release := make(chan struct{}), make(chan struct{})
		l.post(func() { close(held); <-release }) // the loop is busy until release
		<-held
		other := s.loops[1-i]
		for k := i * n / 2; k < (i+1)*n/2; k++ {
			conns[k] = pathsDial(t, s.addr, 5*time.Second)
			fmt.Fprintf(conns[k], "GET /%d HTTP/1.1\r\nHost: t\r\n\r\n", k)
		}
		waited := time.Now()
		for routed(other) != n/2 && time.Since(waited) < 3*time.Second {
			time.Sleep(2 * time.Millisecond)
		}
		close(release)
		if got := routed(other); got != n/2 {
			t.Fatalf("loop %d busy: loop %d routed %d connections, want %d", i, 1-i, got, n/2)
		}
	}
	if a, b := routed(s.loops[0]), routed(s.loops[1]); a != n/2 || b != n/2 {
		t.Fatalf("connections per loop: %d and %d, want %d each", a, b, n/2)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			head := fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: t\r\n\r\n", i)
			body := bytes.Repeat([]byte{byte(i)}, 100<<10+i)
			go func() { c.Write(body); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			if want := append([]byte(head), body...); err != nil || !bytes.Equal(got, want) {
				errs <- fmt.Errorf("connection %d: %d bytes (%v), want %d, equal", i, len(got), err, len(want))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// pathsLoopPair connects two loopback TCP sockets: lb's end as a raw non-blocking
// descriptor, for a conn made by hand, and the peer's.
func pathsLoopPair(t *testing.T) (int, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := pathsDial(t, ln.Addr().String(), 5*time.Second)
	ours, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	f, err := ours.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fd, true)
	return fd, peer
}

// pathsAwaitError waits until fd has a pending error (its peer's reset is in).
func pathsAwaitError(t *testing.T, fd int) {
	t.Helper()
	pathsWait(t, 3*time.Second, "the reset at lb's socket", func() bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n == 1 && fds[0].Revents&unix.POLLERR != 0
	})
}

// TestPathsPumpClosesOnSocketErrors: a read or a write that fails in the middle of a flow,
// copied or spliced, closes the connection there and then; the other peer sees its end.
// Run on the loop itself, on a connection made by hand, so that no other event (a hang-up
// seen later) can close it instead.
func TestPathsPumpClosesOnSocketErrors(t *testing.T) {
	s := pathsStartServer(t, testConfig())
	for _, tc := range []struct {
		name       string
		bulk       bool // the flow splices
		resetSrc   bool // else the destination resets
		sentBefore int  // bytes the source's peer sends
	}{
		{"read fails, copied", false, true, 0},
		{"read fails, spliced", true, true, 0},
		{"write fails, copied", false, false, 100},
		{"write fails, spliced", true, false, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srcFD, srcPeer := pathsLoopPair(t)
			dstFD, dstPeer := pathsLoopPair(t)
			survivor := dstPeer
			if tc.resetSrc {
				pathsReset(srcPeer)
				pathsAwaitError(t, srcFD)
			} else {
				survivor = srcPeer
				pathsReset(dstPeer)
				pathsAwaitError(t, dstFD)
				srcPeer.Write(randomBytes(t, tc.sentBefore))
				pathsWait(t, 3*time.Second, "the bytes at lb's socket", func() bool {
					n, _ := unix.IoctlGetInt(srcFD, unix.TIOCINQ)
					return n == tc.sentBefore
				})
			}
			l := s.loops[0]
			var open bool
			l.call(func() {
				c := spliceConn(l, end{fd: srcFD, bulk: tc.bulk}, end{fd: dstFD})
				if open = l.pump(c, clientSide, false); open {
					l.close(c, nil)
				}
			})
			if open {
				t.Fatal("the flow failed and the connection is still open")
			}
			if _, err := io.ReadAll(survivor); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the other peer: %v, want its end", err)
			}
		})
	}
}
