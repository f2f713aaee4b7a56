//go:build linux

package l4

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/internal/redistest"
	"lb/sessions"
)

// TestPathsStickyResetMidHead: a reset while lb reads the first response head for the
// sticky cookie (the backend resets mid-head), or while lb holds part of that head, or of an
// interim head, for a client that does not read and then resets: the connection is closed
// there and then, nothing of a cut head reaches the client, nothing stays behind.
func TestPathsStickyResetMidHead(t *testing.T) {
	t.Run("backend resets mid-head", func(t *testing.T) {
		var srv *testServer
		b := startBackend(t, func(c *net.TCPConn) {
			http.ReadRequest(bufio.NewReader(c))
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Cut: ")
			// Until lb has read part of the head (not pathsWait: no t.Fatal off the test's goroutine).
			readPart := func(c *conn) bool { return c.rh != nil && c.phase == splicing && c.rh.buf.n > 0 }
			for deadline := time.Now().Add(3 * time.Second); pathsCount(srv.Server, readPart) == 0 && time.Now().Before(deadline); {
				time.Sleep(2 * time.Millisecond)
			}
			pathsReset(c)
		})
		srv = pathsStartServer(t, stickyConfig(), b.addr())
		before := pathsBefore(srv.Server)
		c := pathsDial(t, srv.addr, 5*time.Second)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if got, err := io.ReadAll(c); len(got) > 0 {
			t.Fatalf("the client got %q (%v) of a head its backend reset: want nothing, then the end", got, err)
		}
		pathsWait(t, 3*time.Second, "lb to close the connection", func() bool { return srv.Stats().Active == 0 })
		c.Close()
		pathsNoLeak(t, srv.Server, before)
	})
	for name, head := range map[string]string{
		"client resets while the final head waits for it":  "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("h", 100<<10) + "\r\nContent-Length: 0\r\n\r\n",
		"client resets while an interim head waits for it": earlyHints(3000),
	} {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			b := startBackend(t, func(c *net.TCPConn) {
				http.ReadRequest(bufio.NewReader(c))
				io.WriteString(c, head)
				<-release
			})
			var once sync.Once
			releaseBackend := func() { once.Do(func() { close(release) }) }
			defer releaseBackend()
			cfg := stickyConfig()
			cfg.MaxHeaderBytes = 256 << 10
			s := pathsServeOn(t, cfg, listenSmallSendBuffer(t), b.addr())
			before := pathsBefore(s.Server)
			c := dialSmallWindow(t, s.addr)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			interim := strings.HasPrefix(head, "HTTP/1.1 103")
			pathsWait(t, 3*time.Second, "lb to hold part of the head for the client", func() bool {
				return pathsCount(s.Server, func(c *conn) bool { return c.rh.waitsForClient() && (c.rh.step == writingInterim) == interim }) == 1
			})
			pathsReset(c)
			pathsWait(t, 3*time.Second, "lb to close the connection", func() bool { return s.Stats().Active == 0 })
			releaseBackend()
			pathsNoLeak(t, s.Server, before)
		})
	}
}

// pathsWarmStore has s's store open its connections to Redis, so that a descriptor check
// after it sees only lb's: one lookup and one learned session.
func pathsWarmStore(t *testing.T, s *testServer) {
	t.Helper()
	exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: sid=warm\r\n\r\n")
}

// pathsRedisStore is a session store on r whose calls wait up to timeout.
func pathsRedisStore(t *testing.T, r *redistest.Server, timeout time.Duration) sessions.Store {
	t.Helper()
	st, err := sessions.NewRedisStore(sessions.RedisConfig{URL: r.URL(), Cluster: "paths", TTL: time.Minute, Timeout: timeout}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// pathsSettle waits for every store call of s to end and for its answer to have run on its
// loop (or been found stale).
func pathsSettle(s *Server) {
	s.storeCalls.Wait()
	for _, l := range s.loops {
		l.call(func() {}) // runs after any answer posted before it
	}
}

// TestPathsLateStoreAnswers: the session store answers after lb stopped waiting for it. A
// lookup that outlived the connect timeout was given up on (the ring decided): its answer
// must not dial again. A session recorded for a connection that closed meanwhile must not
// touch it.
func TestPathsLateStoreAnswers(t *testing.T) {
	redis := redistest.Start(t)
	t.Run("lookup", func(t *testing.T) {
		a := startBackend(t, sessionApp("a"))
		cfg := sessionConfig(pathsRedisStore(t, redis, 3*time.Second))
		cfg.ConnectTimeout = 100 * time.Millisecond
		s := pathsStartServer(t, cfg, a.addr())
		pathsWarmStore(t, s)
		warm := a.conns.Load()
		before := pathsBefore(s.Server)
		redis.Signal(syscall.SIGSTOP)
		c := pathsDial(t, s.addr, 5*time.Second)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\nCookie: sid=a-1\r\n\r\n")
		start := time.Now()
		got, err := io.ReadAll(c)
		redis.Signal(syscall.SIGCONT)
		if err != nil || !strings.HasSuffix(string(got), "\r\n\r\na") {
			t.Fatalf("with the store frozen: %q, %v; want a's answer", got, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the answer took %v: lb waited for the store's own timeout, not the connect timeout", d)
		}
		pathsSettle(s.Server) // with the client still connected: the late answer finds its connection
		if n := a.conns.Load() - warm; n != 1 {
			t.Fatalf("the backend got %d connections for one client: the late answer dialed again", n)
		}
		c.Close()
		pathsNoLeak(t, s.Server, before)
	})
	t.Run("learn", func(t *testing.T) {
		a := startBackend(t, sessionApp("a"))
		s := pathsStartServer(t, sessionConfig(pathsRedisStore(t, redis, 3*time.Second)), a.addr())
		pathsWarmStore(t, s)
		before := pathsBefore(s.Server)
		redis.Signal(syscall.SIGSTOP)
		c := pathsDial(t, s.addr, 5*time.Second)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		pathsWait(t, 3*time.Second, "the response head held for the store", func() bool {
			return pathsCount(s.Server, func(c *conn) bool { return c.rh != nil && c.rh.step == holding }) == 1
		})
		pathsReset(c)
		pathsWait(t, 3*time.Second, "lb to close the connection", func() bool { return s.Stats().Active == 0 })
		redis.Signal(syscall.SIGCONT)
		pathsSettle(s.Server)
		// The loop goes on: the next client is served.
		if got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); !strings.HasSuffix(got, "\r\n\r\na") {
			t.Fatalf("after the late answer: %q, want a's answer", got)
		}
		pathsNoLeak(t, s.Server, before)
	})
}

// TestPathsStickyHeadDebugLines: with debug logging, a response head lb cannot parse and a
// cookie with no room left under MaxHeadMemory are each passed through as they came, and
// said so.
func TestPathsStickyHeadDebugLines(t *testing.T) {
	for _, tc := range []struct {
		name, response, line string
		maxHeadMemory        int64
	}{
		{"malformed head", "HTTP/1.1 2xx OK\r\nX: y\r\n\r\nbody", "response head passed through as it came", 0},
		// The head nearly fills a 1 KiB buffer; the cookie line would take it to 2 KiB.
		{"no room for the cookie", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", 960) + "\r\n\r\n", "response head passed through without the cookie: head buffers at their memory bound", 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBackend(t, func(c *net.TCPConn) {
				http.ReadRequest(bufio.NewReader(c))
				io.WriteString(c, tc.response)
			})
			lines, log := pathsDebugLog()
			cfg := stickyConfig()
			cfg.MaxHeaderBytes, cfg.MaxHeadMemory = 1024, tc.maxHeadMemory
			cfg.Log = log
			s := pathsServe(t, cfg, pathsBackendSpec{id: "b0", addr: b.addr()})
			if got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); got != tc.response {
				t.Fatalf("client got %d bytes, want the %d sent, unchanged", len(got), len(tc.response))
			}
			pathsWait(t, 3*time.Second, fmt.Sprintf("the debug line %q", tc.line), func() bool { return lines.Count(tc.line) == 1 })
		})
	}
}
