//go:build linux

package l4

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"lb/ring"
)

// TestResetReachesTheClient: a backend that aborts a download with RST mid-body makes lb
// reset the client too: the client reads an error, not a clean end of a truncated body.
func TestResetReachesTheClient(t *testing.T) {
	body := make([]byte, 4<<20)
	b := startBackend(t, func(c *net.TCPConn) {
		c.Read(make([]byte, 1024))
		c.Write(body[:1<<20])
		c.SetLinger(0)
		c.Close()
	})
	s := startServer(t, testConfig(), b.addr())
	c := dial(t, s.addr)
	c.Write([]byte("GET /big HTTP/1.1\r\nHost: t\r\n\r\n"))
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %d bytes and then %v: want the backend's reset passed on", len(got), err)
	}
}

// TestResetReachesTheBackend: a client that aborts an upload with RST makes lb reset the
// backend too: the backend reads an error, not a clean end of a truncated upload.
func TestResetReachesTheBackend(t *testing.T) {
	got := make(chan error, 1)
	b := startBackend(t, func(c *net.TCPConn) {
		_, err := io.Copy(io.Discard, c)
		got <- err
	})
	s := startServer(t, testConfig(), b.addr())
	c := dial(t, s.addr)
	c.Write([]byte("PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n"))
	c.Write(make([]byte, 1<<20))
	waitFor(t, "the upload to reach the backend", func() bool { return s.Stats().Active == 1 && phaseCount(s.Server, splicing) == 1 })
	c.SetLinger(0)
	c.Close()
	if err := <-got; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("backend's read ended with %v: want the client's reset passed on", err)
	}
}

// TestConnectTimeoutTriesTheNext: a backend whose handshake never completes (its backlog is
// full) is given up after ConnectTimeout, reported as a failed dial, and the next serves.
func TestConnectTimeoutTriesTheNext(t *testing.T) {
	live := startBackend(t, httpName("live"))
	cfg := testConfig()
	cfg.ConnectTimeout = 200 * time.Millisecond
	var failed atomic.Int32
	cfg.OnDialFailure = func(b ring.Backend) {
		if b.ID == "b0" {
			failed.Add(1)
		}
	}
	s := startServer(t, cfg, listenFull(t), live.addr())
	if status, body := get(t, s.addr, ""); status != 200 || body != "live" {
		t.Fatalf("got %d %q, want the live backend after the first timed out", status, body)
	}
	if failed.Load() != 1 {
		t.Fatalf("%d failed dials of the full backend reported, want 1", failed.Load())
	}
}
