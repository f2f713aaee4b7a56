//go:build linux

package l4

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/internal/redistest"
	"lb/sessions"
)

// sessionApp answers one request with name and closes; a request without a sid cookie gets
// a new session, "Set-Cookie: sid=<name>-<n>", as an application server does.
func sessionApp(name string) func(c *net.TCPConn) {
	var n atomic.Int64
	return func(c *net.TCPConn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		setCookie := ""
		if _, err := req.Cookie("sid"); err != nil {
			setCookie = fmt.Sprintf("Set-Cookie: sid=%s-%d; Path=/; HttpOnly\r\n", name, n.Add(1))
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s", setCookie, len(name), name)
	}
}

func sessionConfig(store sessions.Store) Config {
	cfg := testConfig()
	cfg.Sticky = Sticky{SessionCookie: "sid", Sessions: store, Keyer: sessions.NewKeyer([]byte("test secret"))}
	return cfg
}

// newSession makes a request without a session and returns the session the backend set
// and the backend's name.
func newSession(t *testing.T, addr string) (sid, backend string) {
	t.Helper()
	got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	_, rest, ok := strings.Cut(got, "Set-Cookie: sid=")
	if !ok {
		t.Fatalf("response without a session: %q", got)
	}
	sid, _, _ = strings.Cut(rest, ";")
	return sid, got[strings.LastIndex(got, "\n")+1:]
}

// backendFor sends a request carrying sid and returns who answered.
func backendFor(t *testing.T, addr, sid string) string {
	t.Helper()
	got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: theme=dark; sid="+sid+"\r\n\r\n")
	return got[strings.LastIndex(got, "\n")+1:]
}

func TestLearnedSessionInMemory(t *testing.T) {
	a := startBackend(t, sessionApp("a"))
	b := startBackend(t, sessionApp("b"))
	c := startBackend(t, sessionApp("c"))
	store := sessions.NewMemoryStore(100, time.Minute)
	s := startServer(t, sessionConfig(store), a.addr(), b.addr(), c.addr())

	sid, first := newSession(t, s.addr)
	if store.Len() != 1 {
		t.Fatalf("store holds %d sessions after one was set, want 1", store.Len())
	}
	for i := range 10 {
		if got := backendFor(t, s.addr, sid); got != first {
			t.Fatalf("request %d with session %s went to %q, want %q", i, sid, got, first)
		}
	}
	// An unknown session is balanced by the ring.
	seen := map[string]bool{}
	for range 6 {
		seen[backendFor(t, s.addr, "nosuch")] = true
	}
	if len(seen) != 3 {
		t.Fatalf("unknown sessions reached %v, want all 3 backends", seen)
	}
	// Its backend down: the client is moved, and the session the new backend sets is learned.
	s.ring.SetUp(map[string]string{"a": "b0", "b": "b1", "c": "b2"}[first], false)
	moved := backendFor(t, s.addr, sid)
	if moved == first {
		t.Fatalf("session of a down backend still went to %q", first)
	}
	sid2, again := newSession(t, s.addr)
	if again == first || backendFor(t, s.addr, sid2) != again {
		t.Fatalf("new session %s on %q not followed", sid2, again)
	}
}

// TestLearnedSessionSharedThroughRedis: two servers, two stores, one real Redis: a session
// learned through one is routed by the other, at once. Redis frozen: every request still gets
// its answer, from the ring.
func TestLearnedSessionSharedThroughRedis(t *testing.T) {
	redis := redistest.Start(t)
	newStore := func() sessions.Store {
		st, err := sessions.NewRedisStore(sessions.RedisConfig{URL: redis.URL(), Cluster: "t", TTL: time.Minute, Timeout: 100 * time.Millisecond}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	backends := []string{startBackend(t, sessionApp("a")).addr(), startBackend(t, sessionApp("b")).addr(), startBackend(t, sessionApp("c")).addr()}
	replicaA := startServer(t, sessionConfig(newStore()), backends...)
	replicaB := startServer(t, sessionConfig(newStore()), backends...)

	for range 5 {
		sid, first := newSession(t, replicaA.addr)
		for i := range 6 {
			if got := backendFor(t, replicaB.addr, sid); got != first {
				t.Fatalf("session %s learned on %q through A: request %d through B went to %q", sid, first, i, got)
			}
		}
	}
	if keys := redis.Do("DBSIZE"); keys != ":5" {
		t.Fatalf("Redis holds %s keys after 5 sessions, want :5", keys)
	}

	redis.Signal(syscall.SIGSTOP)
	defer redis.Signal(syscall.SIGCONT)
	names := map[string]bool{"a": true, "b": true, "c": true}
	for i := range 6 {
		// Each request waits for the store's 100 ms time-out at most once: 2 s is ample on a
		// busy machine, and far less than a wait for Redis itself.
		start := time.Now()
		sid, first := newSession(t, replicaA.addr) // the learning times out: the answer still comes
		if !names[first] {
			t.Fatalf("new session %d with Redis frozen: answered by %q, want one of the backends", i, first)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("new session %d took %v with Redis frozen", i, d)
		}
		start = time.Now()
		if got := backendFor(t, replicaB.addr, sid); !names[got] { // so does the lookup: the ring decides
			t.Fatalf("request %d with session %s and Redis frozen: answered by %q, want one of the backends", i, sid, got)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("request %d with a session took %v with Redis frozen", i, d)
		}
	}
}

// TestHeldHeadIsNotIdle: a response head held while a frozen Redis times out is not cut by
// an idle timeout shorter than the store's.
func TestHeldHeadIsNotIdle(t *testing.T) {
	redis := redistest.Start(t)
	store, err := sessions.NewRedisStore(sessions.RedisConfig{URL: redis.URL(), Timeout: 400 * time.Millisecond}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := sessionConfig(store)
	cfg.IdleTimeout = 100 * time.Millisecond
	s := startServer(t, cfg, startBackend(t, sessionApp("a")).addr())
	redis.Signal(syscall.SIGSTOP)
	defer redis.Signal(syscall.SIGCONT)
	if sid, backend := newSession(t, s.addr); sid == "" || backend != "a" {
		t.Fatalf("with Redis frozen: session %q from %q, want a session from a", sid, backend)
	}
}

// TestInterimInPartsThenLearnedSession: after an interim head the client takes in parts, the
// final head that sets a session is held while Redis records it, then goes on; the session
// is learned once.
func TestInterimInPartsThenLearnedSession(t *testing.T) {
	redis := redistest.Start(t)
	store, err := sessions.NewRedisStore(sessions.RedisConfig{URL: redis.URL(), Timeout: time.Second}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	hints := earlyHints(2000)
	final := "HTTP/1.1 200 OK\r\nSet-Cookie: sid=s1; Path=/\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
	cfg := sessionConfig(store)
	cfg.MaxHeaderBytes = 256 << 10
	if got := readSlowly(t, cfg, startBackend(t, sendParts(hints+final)).addr()); got != hints+final {
		t.Fatalf("read %d bytes, want %d, the same", len(got), len(hints+final))
	}
	if keys := redis.Do("DBSIZE"); keys != ":1" {
		t.Fatalf("Redis holds %s keys, want the one session", keys)
	}
}
