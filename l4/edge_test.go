//go:build linux

package l4

import (
	"context"
	"io"
	"net/netip"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"lb/accesslog"
	"lb/internal/fdtest"
	"lb/proxyhdr"
)

// Edges an independent review found: each test failed before its fix.

// TestAccessLogOfAConnectionNeverRouted: with the access log on, a client that closes before
// sending a byte (a TCP health check, a port scan) is logged, not a crash: it has no pool.
func TestAccessLogOfAConnectionNeverRouted(t *testing.T) {
	log, err := accesslog.Open(accesslog.Config{Dest: t.TempDir() + "/a.log", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.AccessLog = log
	s := startServer(t, cfg, startBackend(t, httpName("alpha")).addr())
	c := dial(t, s.addr)
	c.Close()
	waitFor(t, "closed", func() bool { return s.Stats().Active == 0 })
}

// TestQueuedMeetsADescriptorShortage: a queued connection whose retry meets lb's own
// descriptor shortage moves to starved, a move the table has.
func TestQueuedMeetsADescriptorShortage(t *testing.T) {
	s := startServer(t, testConfig(), startBackend(t, httpName("alpha")).addr())
	l := s.loops[0]
	restore := fdtest.Squeeze(t)
	var from, to phase
	l.call(func() {
		c := l.conns.add()
		c.lc = l.stats.listener(nil) // as admit gives it one
		c.ends[clientSide].fd, c.ends[backendSide].fd = -1, -1
		c.pool = (*s.pools.Load())[0]
		c.rt = l.routings.get()
		l.stats.Active++
		s.active.Add(1)
		s.conns.Add(1)
		l.enter(c, queued) // as dial does when every backend is at its maxconn
		from = c.phase
		// what the sweep does for a queued connection before its deadline:
		c.rt.cursor = c.pool.Ring.CursorFor(c.client.Addr())
		l.dial(c)
		to = c.phase
		l.close(c, nil)
	})
	restore()
	if n := s.badMoves.Swap(0); n != 0 {
		t.Fatalf("%v -> %v: %d moves off the table", from, to, n)
	}
}

// TestTrustedHeaderAtTheHeadMemoryBound: at the head-memory bound, a trusted balancer's
// connection is closed, not routed with its PROXY header passed on as the client's bytes.
func TestTrustedHeaderAtTheHeadMemoryBound(t *testing.T) {
	b, _ := recordingBackend(t)
	upstream := proxyhdr.AppendV2(nil, netip.MustParseAddrPort("203.0.113.7:4711"), netip.MustParseAddrPort("198.51.100.1:443"))
	cfg := testConfig()
	cfg.AcceptProxy = proxyhdr.Trusted{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.MaxHeadMemory = 1 // every first read is over the bound
	s := startServer(t, cfg, b.addr())
	c := dial(t, s.addr)
	c.Write(append(append([]byte{}, upstream...), "GET / HTTP/1.1\r\nHost: t\r\n\r\n"...))
	c.CloseWrite()
	if reply, _ := io.ReadAll(c); len(reply) != 0 {
		t.Fatalf("routed to the backend, which answered %q: want the connection closed", reply)
	}
}

// TestCollectAfterShutdown: a scrape after Shutdown (the admin server stops after it) posts
// to no loop: their eventfds are closed, and a write would land on whatever file reuses
// the descriptor.
func TestCollectAfterShutdown(t *testing.T) {
	s := startServer(t, testConfig(), startBackend(t, httpName("alpha")).addr())
	wake := s.loops[0].calls.wakefd
	s.Shutdown(context.Background())
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	// The descriptor number is free again: the next file opened may get it.
	if p[1] != wake { // the pipe did not get it by itself
		if err := unix.Dup3(p[1], wake, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
	}
	defer unix.Close(wake)
	collect(s.Server)
	var buf [16]byte
	if n, _ := unix.Read(p[0], buf[:]); n > 0 {
		t.Errorf("Collect after Shutdown wrote %q into the file that now has fd %d", buf[:n], wake)
	}
}
