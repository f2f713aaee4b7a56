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

// TestSessionsSurviveSentinelFailover: two lb replicas share sessions in a Redis that Sentinel
// manages (--session-store redis+sentinel://), with the default --session-timeout. The
// master is killed in the middle of a request loop: no request fails (the ring decides while
// the store fails), and once Sentinel has promoted the replica, a session learned before is
// routed to its backend again through either replica, and a new one is learned and shared.
func TestSessionsSurviveSentinelFailover(t *testing.T) {
	slow(t, "a request loop across a Sentinel failover")
	ngx := startNginx(t, 3)
	// 2 s, not less: on a busy machine a master slow to answer Sentinel's PINGs for half a
	// second was taken for dead before the test killed it.
	set := redistest.StartSentinelSet(t, redistest.SentinelConfig{DownAfter: 2 * time.Second})
	servers := writeServersFile(t, ngx[0].Addr, ngx[1].Addr, ngx[2].Addr)
	replica := func() *lbProcess {
		return startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--session-cookie", "PHPSESSID",
			"--session-store", set.URL(), "--cluster-name", "e2e",
			// A bound a race-built lb meets on a busy 2-core machine: a lookup that outlives it
			// is a miss by design, and the checks after the failover want every one answered.
			"--session-timeout", "1s")
	}
	a, b := replica(), replica()

	old := stickyClient(t)
	first, err := backendOf(old, "http://"+a.Addr+"/app")
	if err != nil {
		t.Fatal(err)
	}
	// lb stores a session off the request's path: wait until the master has it, then until
	// the replica has it too, so that the failover cannot lose it. (Not WAIT: it counts the
	// replicas that have this connection's writes, and the test's connection wrote none.)
	if !waitUntil(5*time.Second, func() bool { return len(set.Master.Reply("KEYS", "lb:e2e:s:*")) > 0 }) {
		t.Fatal("the session learned through replica A never reached the Redis master")
	}
	if !waitUntil(5*time.Second, func() bool { return len(set.Replica.Reply("KEYS", "lb:e2e:s:*")) > 0 }) {
		t.Fatal("the session never reached the Redis replica")
	}

	// A request loop through both replicas, the old session and new ones, while the master dies.
	var mu sync.Mutex
	var failed []string
	requests, moved := 0, 0 // moved: requests of the old session that reached another backend
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			c := old
			if i%3 == 0 {
				c = stickyClient(t)
			}
			n, err := backendOf(c, "http://"+[]*lbProcess{a, b}[i%2].Addr+"/app")
			mu.Lock()
			requests++
			if err != nil {
				failed = append(failed, fmt.Sprintf("request %d: %v", i, err))
			} else if c == old && n != first {
				moved++
			}
			mu.Unlock()
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return requests }
	if !waitUntil(5*time.Second, func() bool { return count() >= 20 }) {
		t.Fatalf("request loop stalled before the failover: %d requests", count())
	}
	killed := time.Now()
	set.Master.Stop() // SIGKILL
	set.AwaitPromotion(20 * time.Second)
	promoted := time.Since(killed)
	for _, p := range []*lbProcess{a, b} {
		if _, ok := p.log.waitFor(0, 10*time.Second, func(e logEntry) bool { return e.Message == "session store back" }); !ok {
			t.Fatal("a replica did not log \"session store back\" after Sentinel promoted the replica")
		}
	}
	back := time.Since(killed)
	after := count()
	if !waitUntil(10*time.Second, func() bool { return count() >= after+30 }) {
		t.Fatalf("request loop stalled after the failover: %d requests", count()-after)
	}
	close(stop)
	<-done
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed across the failover:\n%v", len(failed), requests, failed)
	}
	t.Logf("%d requests across the failover, none failed; Sentinel promoted the replica %v after the kill, both replicas were back by %v; %d requests of the old session went to another backend meanwhile",
		requests, promoted.Round(time.Millisecond), back.Round(time.Millisecond), moved)

	for i := range 20 {
		via := []*lbProcess{a, b}[i%2]
		if n, err := backendOf(old, "http://"+via.Addr+"/app"); err != nil || n != first {
			var dump []string
			for _, k := range set.Replica.Reply("KEYS", "lb:e2e:s:*") {
				dump = append(dump, k+"="+strings.Join(set.Replica.Reply("GET", k), ",")+" ttl "+strings.Join(set.Replica.Reply("TTL", k), ","))
			}
			t.Fatalf("request %d of the session learned before the failover went to backend %d (%v); want %d; new master: %v", i, n, err, first, dump)
		}
	}
	fresh := stickyClient(t)
	second, err := backendOf(fresh, "http://"+a.Addr+"/app")
	if err != nil {
		t.Fatal(err)
	}
	// lb stores it off the request's path: B finds it once the new master has it.
	if !waitUntil(5*time.Second, func() bool { n, err := backendOf(fresh, "http://"+b.Addr+"/app"); return err == nil && n == second }) {
		t.Fatal("replica B never routed a session learned through A after the failover to its backend")
	}
	for i := range 10 {
		if n, err := backendOf(fresh, "http://"+b.Addr+"/app"); err != nil || n != second {
			t.Fatalf("request %d through replica B of a session learned through A after the failover went to backend %d (%v); want %d", i, n, err, second)
		}
	}
	a.stop(t)
	b.stop(t)
}
