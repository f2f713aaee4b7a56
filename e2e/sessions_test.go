package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"lb/internal/freeport"
	"lb/internal/redistest"
)

// sessionOf returns the PHPSESSID the client's jar holds for base, or "".
func sessionOf(c *http.Client, base string) string {
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "PHPSESSID" {
			return ck.Value
		}
	}
	return ""
}

// TestLearnedSessions: lb learns nginx's own session cookie from its first response; a
// client with a cookie jar stays on that backend over 50 new connections, one without
// rotates, and when the backend stops the client is moved with no failed request.
func TestLearnedSessions(t *testing.T) {
	ngx := startNginx(t, 3)
	servers := writeServersFile(t, ngx[0].Addr, ngx[1].Addr, ngx[2].Addr)
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--session-cookie", "PHPSESSID",
		"--health-interval", "50ms", "--health-timeout", "200ms", "--fall", "2", "--rise", "2")
	app := "http://" + lb.Addr + "/app"

	jar := stickyClient(t)
	first, err := backendOf(jar, app)
	if err != nil {
		t.Fatal(err)
	}
	if sessionOf(jar, app) == "" {
		t.Fatal("nginx set no PHPSESSID through lb")
	}
	for i := range 50 {
		if n, err := backendOf(jar, app); err != nil || n != first {
			t.Fatalf("request %d with the session: backend %d, %v; want %d", i, n, err, first)
		}
	}
	seen := map[int]bool{}
	for range 6 {
		n, err := backendOf(newClient(false), app)
		if err != nil {
			t.Fatal(err)
		}
		seen[n] = true
	}
	if len(seen) != 3 {
		t.Fatalf("clients without a session reached backends %v, want all 3", seen)
	}

	ngx[first-1].stop(t)
	for i := range 20 {
		n, err := backendOf(jar, app)
		if err != nil {
			t.Fatalf("request %d after the session's backend stopped: %v", i, err)
		}
		if n == first {
			t.Fatalf("request %d reached the stopped backend %d", i, n)
		}
	}
	lb.stop(t)
}

// TestSessionsSharedByReplicas: two lb processes and one real redis-server. A session learned
// through replica A is routed by replica B to the same backend; Redis killed in the middle of
// a request loop costs no request (the ring decides meanwhile, one warning per replica);
// Redis restarted, sharing resumes.
func TestSessionsSharedByReplicas(t *testing.T) {
	slow(t, "a request loop across a Redis outage")
	ngx := startNginx(t, 3)
	redis := redistest.Start(t)
	servers := writeServersFile(t, ngx[0].Addr, ngx[1].Addr, ngx[2].Addr)
	replica := func() *lbProcess {
		return startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--session-cookie", "PHPSESSID",
			"--session-store", redis.URL(), "--cluster-name", "e2e", "--session-timeout", "100ms")
	}
	a, b := replica(), replica()
	if e, ok := a.log.waitFor(0, time.Second, func(e logEntry) bool { return e.Message == "listening" }); !ok || e.Sticky == "" {
		t.Fatalf("replica A's start line does not say the sticky mode: %s", e.raw)
	}

	// sticks checks that a new session learned through A is followed by B, and by A again.
	sticks := func(what string) {
		t.Helper()
		jar := stickyClient(t)
		first, err := backendOf(jar, "http://"+a.Addr+"/app")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i := range 20 {
			via := []*lbProcess{b, a}[i%2]
			if n, err := backendOf(jar, "http://"+via.Addr+"/app"); err != nil || n != first {
				t.Fatalf("%s: request %d through replica %s went to backend %d (%v), want %d", what, i, []string{"B", "A"}[i%2], n, err, first)
			}
		}
	}
	sticks("before the outage")

	// A request loop through both replicas, new sessions and known ones, while Redis dies.
	var mu sync.Mutex
	var failed []string
	requests := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		jar := stickyClient(t)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			c := jar
			if i%3 == 0 {
				c = stickyClient(t) // a new session
			}
			via := []*lbProcess{a, b}[i%2]
			_, err := backendOf(c, "http://"+via.Addr+"/app")
			mu.Lock()
			requests++
			if err != nil {
				failed = append(failed, fmt.Sprintf("request %d: %v", i, err))
			}
			mu.Unlock()
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return requests }
	if !waitUntil(5*time.Second, func() bool { return count() >= 20 }) {
		t.Fatalf("request loop stalled before the outage: %d requests", count())
	}
	redis.Stop()
	for _, p := range []*lbProcess{a, b} {
		if _, ok := p.log.waitFor(0, 5*time.Second, func(e logEntry) bool { return e.Message == "session store unreachable" }); !ok {
			t.Fatal("a replica did not log \"session store unreachable\" with Redis killed")
		}
	}
	during := count()
	if !waitUntil(10*time.Second, func() bool { return count() >= during+60 }) {
		t.Fatalf("request loop stalled with Redis down: %d requests in the outage", count()-during)
	}
	redis.Restart()
	for _, p := range []*lbProcess{a, b} {
		if _, ok := p.log.waitFor(0, 5*time.Second, func(e logEntry) bool { return e.Message == "session store back" }); !ok {
			t.Fatal("a replica did not log \"session store back\" after Redis restarted")
		}
	}
	close(stop)
	<-done
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed across the Redis outage:\n%v", len(failed), requests, failed)
	}
	for name, p := range map[string]*lbProcess{"A": a, "B": b} {
		n := 0
		for _, e := range p.log.entries(0) {
			if e.Message == "session store unreachable" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("replica %s logged %d \"session store unreachable\" lines for one outage, want 1", name, n)
		}
	}
	sticks("after Redis restarted")
	t.Logf("%d requests across the outage, none failed", requests)
	a.stop(t)
	b.stop(t)
}

// TestSessionStoreCLI: lb probe shows the sticky modes and checks the Redis store; lb serve
// with no Redis to hand out the cluster's secret does not start, and says what to do.
func TestSessionStoreCLI(t *testing.T) {
	slow(t, "lb serve waits 5 s for an unreachable Redis to hand out the secret")
	redis := redistest.Start(t)
	backend := startTCPBackend(t, echo)
	servers := writeServersFile(t, backend.Addr)
	stdout, stderr, status := runLB(t, "probe", "-f", servers, "--sticky-cookie", "lb_srv",
		"--session-cookie", "PHPSESSID", "--session-store", redis.URL(), "--cluster-name", "shop")
	want := "sticky: cookie lb_srv (inserted), session PHPSESSID (learned, in " + redis.URL() + ", cluster shop)"
	if status != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("probe with Redis up: exit %d, stdout:\n%s\nstderr: %s\nwant a line %q", status, stdout, stderr, want)
	}
	nowhere := "redis://" + unusedAddr(t) + "/0"
	stdout, _, status = runLB(t, "probe", "-f", servers, "--session-cookie", "PHPSESSID", "--session-store", nowhere)
	if status != 1 || !strings.Contains(stdout, "session store: unreachable") {
		t.Fatalf("probe with Redis down: exit %d, stdout:\n%s\nwant exit 1 and the store unreachable", status, stdout)
	}
	_, stderr, status = runLB(t, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--session-cookie", "PHPSESSID", "--session-store", nowhere)
	if status != 1 || !strings.Contains(stderr, "--session-secret") {
		t.Fatalf("serve with Redis down and no secret: exit %d, stderr: %s; want exit 1 naming --session-secret", status, stderr)
	}
}

// unusedAddr is a loopback address where nothing listens.
func unusedAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
}
