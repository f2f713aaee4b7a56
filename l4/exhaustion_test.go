//go:build linux

package l4

import (
	"bufio"
	"bytes"
	"io"
	"lb/metrics"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lb/internal/fdtest"
	"lb/internal/logtest"
	"lb/ring"
)

// requestOutOfDescriptors starts a server on cfg in front of an "ok" backend, has a client
// connect, then runs the process out of descriptors (restore gives them back) and sends the
// request: lb cannot create the backend socket. reported counts the failed dials health hears of.
func requestOutOfDescriptors(t *testing.T, cfg Config) (s *testServer, c *net.TCPConn, reported *atomic.Int32, restore func()) {
	t.Helper()
	b := startBackend(t, httpName("ok"))
	reported = new(atomic.Int32)
	cfg.OnDialFailure = func(ring.Backend) { reported.Add(1) }
	s = startServer(t, cfg, b.addr())
	c = dial(t, s.addr)
	waitFor(t, "the connection to be accepted", func() bool { return s.Stats().Active == 1 })
	restore = fdtest.Squeeze(t)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
	return s, c, reported, restore
}

// TestOwnShortageIsNotTheBackends: with lb out of descriptors, a routed connection waits for
// one instead of failing its backend: health hears of no failed dial, the shortage is logged
// once, and the client is served once a descriptor is free.
func TestOwnShortageIsNotTheBackends(t *testing.T) {
	logs, log := logtest.New()
	cfg := testConfig()
	cfg.Log = log
	s, c, reported, restore := requestOutOfDescriptors(t, cfg)
	// Starved, or (the bug) refused or closed as if every backend had failed.
	waitFor(t, "the connection to wait for a descriptor", func() bool {
		return phaseCount(s.Server, starved) == 1 || s.Stats().Active == 0 || collect(s.Server).Refused[metrics.RefuseDialFailed] > 0
	})
	if phaseCount(s.Server, starved) != 1 {
		restore()
		t.Fatalf("out of descriptors, the connection did not wait for one: %+v, %d failed dials reported", s.Stats(), reported.Load())
	}
	restore()

	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("after the shortage: %d %q, want the backend's 200", resp.StatusCode, body)
	}
	if n := reported.Load(); n != 0 {
		t.Errorf("health heard of %d failed dials: lb's own shortage was blamed on the backend", n)
	}
	if n := logs.Count("out of descriptors: new connections wait for one; raise the open-files limit"); n != 1 {
		t.Errorf("logged the shortage %d times, want once", n)
	}
	waitFor(t, "the end of the shortage to be logged", func() bool { return logs.Count("descriptors available again") == 1 })
}

// TestShortageOutlastsTheConnectTimeout: a client that waited ConnectTimeout for a
// descriptor is told so with a 503, and nothing is blamed on the backend.
func TestShortageOutlastsTheConnectTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.ConnectTimeout = 300 * time.Millisecond
	s, c, reported, restore := requestOutOfDescriptors(t, cfg)
	waitFor(t, "the client to be refused", func() bool { return collect(s.Server).Refused[metrics.RefuseNoDescriptor] == 1 })
	restore()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(body) != "lb is out of descriptors\n" {
		t.Errorf("after ConnectTimeout without a descriptor: %d %q, want 503", resp.StatusCode, body)
	}
	if _, up, _ := s.ring.Lookup("b0"); !up || reported.Load() != 0 {
		t.Errorf("backend up=%v, %d failed dials reported: want it untouched", up, reported.Load())
	}
}

// TestNoPipeLosesNoByte: with no descriptor for a pipe at all, a bulk echo both ways through
// a client that takes a few kilobytes at a time still arrives whole and in order: the flows
// copy what the other end takes and leave the rest in the socket.
// epollConfig is testConfig on the epoll engine, for what only its pump does: pipes.
func epollConfig() Config {
	cfg := testConfig()
	cfg.Engine = EngineEpoll
	return cfg
}

func TestNoPipeLosesNoByte(t *testing.T) {
	real := pipe2
	t.Cleanup(func() { pipe2 = real })
	var calls atomic.Int32
	pipe2 = func([]int) error { calls.Add(1); return unix.EMFILE }
	b := startBackend(t, echo)
	s := startServer(t, epollConfig(), b.addr())
	const size = 4 << 20
	payload := randomBytes(t, size)
	c := dialSmallWindow(t, s.addr)
	writeErr := writeThenHalfClose(c, payload)
	// The client reads nothing until a flow has found its destination full: short writes by
	// construction.
	waitFor(t, "a flow blocked on a full destination", func() bool {
		blocked := false
		for _, l := range s.loops {
			l.call(func() {
				for _, c := range l.conns.slots {
					blocked = blocked || c != nil && (c.ends[clientSide].blocked || c.ends[backendSide].blocked)
				}
			})
		}
		return blocked
	})
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo without pipes: %d bytes back of %d, first difference at %d", len(got), size, firstDiff(got, payload))
	}
	if st := s.Stats(); calls.Load() == 0 || st.SplicedBytes != 0 {
		t.Fatalf("%d pipes asked for, %d bytes spliced: want the copy without pipes to have run", calls.Load(), st.SplicedBytes)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestAcceptStopsAtTheLimit: with MaxConns 2, a third client waits in the listen backlog,
// unaccepted, and is served as soon as one of the first two closes.
func TestAcceptStopsAtTheLimit(t *testing.T) {
	b := startBackend(t, echo)
	logs, log := logtest.New()
	cfg := testConfig()
	cfg.MaxConns, cfg.Log = 2, log
	s := startServer(t, cfg, b.addr())
	if s.Stats().MaxConns != 2 {
		t.Fatalf("Stats().MaxConns = %d, want 2", s.Stats().MaxConns)
	}
	echoes := func(c *net.TCPConn, msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	first, second := dial(t, s.addr), dial(t, s.addr)
	echoes(first, "one")
	echoes(second, "two")
	third := dial(t, s.addr) // the kernel completes the handshake: it waits in the backlog
	third.Write([]byte("three"))
	waitFor(t, "accepting to stop at the limit (or, the bug, a third accept)", func() bool {
		return logs.Count("connection limit reached: new clients wait in the listen backlog") == 1 || collect(s.Server).Accepted > 2
	})
	if st, snap := s.Stats(), collect(s.Server); snap.Accepted != 2 || st.Active != 2 {
		t.Fatalf("at the limit: accepted %d, active %d; want 2 and 2", snap.Accepted, st.Active)
	}
	first.Close()
	got := make([]byte, 5)
	if _, err := io.ReadFull(third, got); err != nil || string(got) != "three" {
		t.Fatalf("the client from the backlog: %q, %v; want its echo once a slot was free", got, err)
	}
	echoes(second, "still")
	waitFor(t, "the end of the episode to be logged", func() bool {
		return logs.Count("below the connection limit: accepting again") == 1
	})
}

// TestSlowHeadsClosed: with CloseSlowHeads, a head still incomplete at SniffTimeout closes
// the connection; no backend ever sees it. A whole head is routed as ever.
func TestSlowHeadsClosed(t *testing.T) {
	b := startBackend(t, httpName("ok"))
	cfg := testConfig()
	cfg.SniffTimeout, cfg.CloseSlowHeads = 200*time.Millisecond, true
	s := startServer(t, cfg, b.addr())
	c := dial(t, s.addr)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: slow"))
	c.SetReadDeadline(time.Now().Add(3 * time.Second)) // fails in seconds if lb routes it instead
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes: want the connection closed", n)
	}
	if slow := collect(s.Server).Refused[metrics.RefuseSlowHead]; slow != 1 || b.conns.Load() != 0 {
		t.Fatalf("closed slow %d, backend connections %d: want 1 and 0", slow, b.conns.Load())
	}
	if status, body := get(t, s.addr, ""); status != 200 || body != "ok" {
		t.Fatalf("a whole head: %d %q", status, body)
	}
}

// TestNoPipeResetMidTransfer: with no pipe to be had, a client that resets mid-download
// ends the connection: the copy without a pipe closes on the write error, and nothing is left.
func TestNoPipeResetMidTransfer(t *testing.T) {
	real := pipe2
	t.Cleanup(func() { pipe2 = real })
	pipe2 = func([]int) error { return unix.EMFILE }
	b := startBackend(t, func(c *net.TCPConn) {
		c.Read(make([]byte, 1024))
		for c.SetWriteDeadline(time.Now().Add(ioDeadline)); ; {
			if _, err := c.Write(make([]byte, 64<<10)); err != nil {
				return
			}
		}
	})
	s := startServer(t, epollConfig(), b.addr())
	c := dialSmallWindow(t, s.addr)
	c.Write([]byte("GET /big HTTP/1.1\r\nHost: t\r\n\r\n"))
	waitFor(t, "a flow blocked on the client", func() bool {
		blocked := false
		for _, l := range s.loops {
			l.call(func() {
				for _, c := range l.conns.slots {
					blocked = blocked || c != nil && c.ends[backendSide].blocked
				}
			})
		}
		return blocked
	})
	c.SetLinger(0)
	c.Close()
	waitFor(t, "the connection closed", func() bool { return s.Stats().Active == 0 })
}
