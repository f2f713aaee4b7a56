package sessions

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/dnswatch"
	"lb/internal/dnstest"
	"lb/internal/logtest"
	"lb/internal/redistest"
)

// waitFor bounds every wait on a condition; generous so that a loaded CI machine passes.
const waitFor = 5 * time.Second

// testTimeout is the RedisStore Timeout of the tests: long enough that a healthy Redis
// answers within it with both CPUs busy under -race (100 ms was not, once in four runs at a
// load of 8.7). callSlack is what a failing call may take beyond it on such a machine.
const (
	testTimeout = 300 * time.Millisecond
	callSlack   = 500 * time.Millisecond
)

// unusedRedisURL is a Redis URL on a loopback port where nothing listens.
func unusedRedisURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "redis://" + ln.Addr().String() + "/0"
}

func newRedisStore(t testing.TB, cfg RedisConfig, log zerolog.Logger) *RedisStore {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = testTimeout
	}
	s, err := NewRedisStore(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

const (
	msgDown = "session store unreachable"
	msgBack = "session store back"
)

func TestRedisTwoReplicas(t *testing.T) {
	r := redistest.Start(t)
	cfg := RedisConfig{URL: r.URL(), Cluster: "prod", TTL: time.Minute}
	a := newRedisStore(t, cfg, zerolog.Nop())
	b := newRedisStore(t, cfg, zerolog.Nop())
	k := NewKeyer([]byte("cluster secret"))
	key := k.Key([]byte("9f8e7d6c5b4a39281706f5e4d3c2b1a0"))

	wantID(t, a, key, "")
	mustSet(t, a, key, "blue")
	wantID(t, b, key, "blue") // learned on a, seen on b at once
	mustSet(t, b, key, "green")
	wantID(t, a, key, "green")
	wantID(t, b, key, "green")

	// What Redis holds: the hashed key under the cluster's prefix, the backend id, a TTL;
	// nothing of the session value.
	if got := r.Do("GET", "lb:prod:s:"+key); got != "green" {
		t.Errorf("GET lb:prod:s:%s = %q; want green", key, got)
	}
	if ttl, _ := strconv.Atoi(strings.TrimPrefix(r.Do("TTL", "lb:prod:s:"+key), ":")); ttl < 50 || ttl > 60 {
		t.Errorf("TTL of the session key = %d s; want about 60", ttl)
	}
	if keys := r.Do("KEYS", "*9f8e7d6c*"); keys != "*0" {
		t.Errorf("KEYS *9f8e7d6c* = %q: the raw session value is in Redis", keys)
	}
}

func TestRedisNamespacedByCluster(t *testing.T) {
	r := redistest.Start(t)
	east := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "east"}, zerolog.Nop())
	west := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "west"}, zerolog.Nop())
	unnamed := newRedisStore(t, RedisConfig{URL: r.URL()}, zerolog.Nop())

	mustSet(t, east, "k", "e1")
	wantID(t, west, "k", "")
	wantID(t, unnamed, "k", "")
	mustSet(t, west, "k", "w1")
	mustSet(t, unnamed, "k", "d1")
	wantID(t, east, "k", "e1")
	wantID(t, west, "k", "w1")
	for key, want := range map[string]string{"lb:east:s:k": "e1", "lb:west:s:k": "w1", "lb:default:s:k": "d1"} {
		if got := r.Do("GET", key); got != want {
			t.Errorf("GET %s = %q; want %q", key, got, want)
		}
	}
}

// TestRedisSlidingTTL keeps a 1 s session in use for three times its TTL, then leaves it:
// it must expire about one TTL after its last Get.
func TestRedisSlidingTTL(t *testing.T) {
	r := redistest.Start(t)
	const ttl = time.Second
	s := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "c", TTL: ttl}, zerolog.Nop())
	mustSet(t, s, "k", "blue")
	set := time.Now()
	tick := time.NewTicker(ttl / 4)
	defer tick.Stop()
	var lastGet time.Time
	for range tick.C {
		if time.Since(set) > 3*ttl {
			break
		}
		wantID(t, s, "k", "blue")
		lastGet = time.Now()
	}
	if pttl, _ := strconv.Atoi(strings.TrimPrefix(r.Do("PTTL", "lb:c:s:k"), ":")); pttl <= 0 || pttl > int(ttl/time.Millisecond) {
		t.Errorf("PTTL after a Get = %d ms; want up to %d", pttl, ttl/time.Millisecond)
	}

	// Watch the key without touching its TTL (EXISTS does not refresh it; Get would).
	deadline := time.Now().Add(waitFor)
	for r.Do("EXISTS", "lb:c:s:k") == ":1" {
		if time.Now().After(deadline) {
			t.Fatalf("session still in Redis %v after its last Get; TTL %v", time.Since(lastGet), ttl)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	if idle := time.Since(lastGet); idle < ttl-50*time.Millisecond {
		t.Errorf("session expired %v after its last Get; want about its TTL, %v", idle, ttl)
	}
	wantID(t, s, "k", "")
}

// TestRedisOutage kills Redis under a store: calls must fail within Timeout, one warning
// must be logged for the whole outage, and one info when a Redis on the same port answers.
func TestRedisOutage(t *testing.T) {
	r := redistest.Start(t)
	logs, log := logtest.New()
	s := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "c"}, log)
	mustSet(t, s, "k", "blue")
	wantID(t, s, "k", "blue")

	r.Stop()
	failAll(t, s, 40)
	if n := logs.Count(msgDown); n != 1 {
		t.Fatalf("%d %q lines for one outage; want 1; logs:\n%s", n, msgDown, logs)
	}

	r.Restart()
	awaitBack(t, s)
	wantID(t, s, "k", "") // a new, empty Redis
	mustSet(t, s, "k", "green")
	wantID(t, s, "k", "green")
	if down, back := logs.Count(msgDown), logs.Count(msgBack); down != 1 || back != 1 {
		t.Fatalf("%d %q and %d %q lines for one outage; want 1 and 1; logs:\n%s", down, msgDown, back, msgBack, logs)
	}
}

// TestRedisStalled stops Redis without closing its sockets, the way an overloaded or
// partitioned Redis looks: calls must still end within Timeout.
func TestRedisStalled(t *testing.T) {
	r := redistest.Start(t)
	logs, log := logtest.New()
	s := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "c"}, log)
	mustSet(t, s, "k", "blue")

	r.Signal(syscall.SIGSTOP)
	failAll(t, s, 10)
	if n := logs.Count(msgDown); n != 1 {
		t.Fatalf("%d %q lines for one outage; want 1; logs:\n%s", n, msgDown, logs)
	}
	r.Signal(syscall.SIGCONT)
	awaitBack(t, s)
	// A Set that timed out may still be applied: it was sent, and Redis reads it on waking.
	if id, _ := mustGet(t, s, "k"); id != "blue" && id != "red" {
		t.Errorf("Get after the stall = %q; want blue, or red from a Set that timed out", id)
	}
	if down, back := logs.Count(msgDown), logs.Count(msgBack); down != 1 || back != 1 {
		t.Fatalf("%d %q and %d %q lines for one outage; want 1 and 1; logs:\n%s", down, msgDown, back, msgBack, logs)
	}
}

// failAll makes n calls, half Get, half Set, from several goroutines, and checks that each
// fails with ErrUnavailable within Timeout.
func failAll(t *testing.T, s *RedisStore, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			start := time.Now()
			var err error
			if i%2 == 0 {
				_, _, err = s.Get(context.Background(), "k")
			} else {
				err = s.Set(context.Background(), "k", "red")
			}
			took := time.Since(start)
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("call %d during the outage: %v; want ErrUnavailable", i, err)
			}
			if took > testTimeout+callSlack {
				t.Errorf("call %d during the outage took %v; want at most Timeout %v (+%v)", i, took, testTimeout, callSlack)
			}
		})
	}
	wg.Wait()
}

// awaitBack calls Get until Redis answers, checking that every failed call was quick.
func awaitBack(t *testing.T, s *RedisStore) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		start := time.Now()
		_, _, err := s.Get(context.Background(), "probe")
		if err == nil {
			return
		}
		if took := time.Since(start); took > testTimeout+callSlack {
			t.Errorf("Get while Redis comes back took %v", took)
		}
		if time.Now().After(deadline) {
			t.Fatalf("store still failing %v after Redis came back: %v", waitFor, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

func TestRedisDownAtStart(t *testing.T) {
	logs, log := logtest.New()
	s := newRedisStore(t, RedisConfig{URL: unusedRedisURL(t)}, log)
	start := time.Now()
	if err := s.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping with no Redis: %v; want ErrUnavailable", err)
	}
	if took := time.Since(start); took > testTimeout+callSlack {
		t.Errorf("Ping with no Redis took %v", took)
	}
	failAll(t, s, 10)
	if n := logs.Count(msgDown); n != 1 {
		t.Fatalf("%d %q lines; want 1; logs:\n%s", n, msgDown, logs)
	}
}

// TestRedisCallerGivesUp checks that a call cancelled by its caller fails without counting
// against Redis.
func TestRedisCallerGivesUp(t *testing.T) {
	r := redistest.Start(t)
	logs, log := logtest.New()
	s := newRedisStore(t, RedisConfig{URL: r.URL()}, log)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Get(ctx, "k"); !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with a cancelled ctx: %v; want context.Canceled only", err)
	}
	if n := logs.Count(msgDown); n != 0 {
		t.Fatalf("a cancelled call was logged as an outage:\n%s", logs)
	}
}

func TestRedisClose(t *testing.T) {
	r := redistest.Start(t)
	logs, log := logtest.New()
	s := newRedisStore(t, RedisConfig{URL: r.URL()}, log)
	mustSet(t, s, "k", "blue")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := s.Get(context.Background(), "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v; want ErrClosed", err)
	}
	if err := s.Set(context.Background(), "k", "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: %v; want ErrClosed", err)
	}
	if err := s.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close: %v; want ErrClosed", err)
	}
	if n := logs.Count(msgDown); n != 0 {
		t.Errorf("Close was logged as an outage:\n%s", logs)
	}
}

// TestRedisCache checks the local cache's promise: a value another replica changed is
// served at most about a second, a miss is never cached, and Set writes through.
func TestRedisCache(t *testing.T) {
	r := redistest.Start(t)
	cached := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "c", CacheSize: 100}, zerolog.Nop())
	other := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "c"}, zerolog.Nop())

	mustSet(t, cached, "k", "blue")
	if got := r.Do("GET", "lb:c:s:k"); got != "blue" {
		t.Fatalf("Set did not write through: Redis holds %q", got)
	}
	wantID(t, other, "k", "blue")

	mustSet(t, other, "k", "green")
	changed := time.Now()
	for {
		id, _ := mustGet(t, cached, "k")
		if id == "green" {
			break
		}
		if id != "blue" {
			t.Fatalf("Get = %q; want blue (cached) or green", id)
		}
		if time.Since(changed) > cacheMaxAge+500*time.Millisecond {
			t.Fatalf("cache still serves an old id %v after another replica changed it", time.Since(changed))
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}

	wantID(t, cached, "new", "")
	mustSet(t, other, "new", "red")
	wantID(t, cached, "new", "red") // the miss was not cached
}

// TestNewRedisStoreDefaults checks which fields take defaults: only those out of range.
// NewRedisStore does not contact Redis, so none runs here.
func TestNewRedisStoreDefaults(t *testing.T) {
	const url = "redis://127.0.0.1:1/0"
	tests := []struct {
		in           RedisConfig
		prefix       string
		ttl, timeout time.Duration
		cache        bool
	}{
		// The 50ms that RedisConfig documents, not DefaultRedisTimeout: a default of 0 would
		// fail every call at once.
		{RedisConfig{URL: url}, "lb:default:s:", DefaultTTL, 50 * time.Millisecond, false},
		{RedisConfig{URL: url, TTL: -1, Timeout: -1, CacheSize: -1}, "lb:default:s:", DefaultTTL, 50 * time.Millisecond, false},
		{RedisConfig{URL: url, Cluster: "c", TTL: time.Second, Timeout: time.Nanosecond, CacheSize: 1}, "lb:c:s:", time.Second, time.Nanosecond, true},
		{RedisConfig{URL: url, TTL: time.Minute, Timeout: 3 * time.Second}, "lb:default:s:", time.Minute, 3 * time.Second, false},
	}
	for _, tt := range tests {
		s, err := NewRedisStore(tt.in, zerolog.Nop())
		if err != nil {
			t.Fatalf("NewRedisStore(%+v): %v", tt.in, err)
		}
		if s.prefix != tt.prefix || s.ttl != tt.ttl || s.timeout != tt.timeout || (s.cache != nil) != tt.cache {
			t.Errorf("NewRedisStore(%+v): prefix %q, ttl %v, timeout %v, cache %t; want %q, %v, %v, %t",
				tt.in, s.prefix, s.ttl, s.timeout, s.cache != nil, tt.prefix, tt.ttl, tt.timeout, tt.cache)
		}
		s.Close()
	}
}

func TestNewRedisStoreBadURL(t *testing.T) {
	for _, u := range []string{"", "localhost:6379", "http://localhost:6379", "redis://:hunter2@localhost:notaport/0", "redis://localhost:6379/notadb", "redis://u:hunter2@[::1/0"} {
		_, err := NewRedisStore(RedisConfig{URL: u}, zerolog.Nop())
		if err == nil {
			t.Errorf("NewRedisStore(URL %q): no error", u)
			continue
		}
		t.Logf("URL %q: %v", u, err)
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("NewRedisStore(URL %q): error shows the password: %v", u, err)
		}
		if u != "" && !strings.Contains(err.Error(), `"`+strings.ReplaceAll(u, ":hunter2@", ":xxxxx@")+`"`) {
			t.Errorf("NewRedisStore(URL %q): error does not quote the URL: %v", u, err)
		}
	}
}

// TestReachabilityFlapping drives the outage log by hand: a Redis that comes and goes
// within flapQuiet logs one pair of lines, and an outage that lasts is reported all the
// same once flapQuiet has passed.
func TestReachabilityFlapping(t *testing.T) {
	logs, log := logtest.New()
	c := newClock()
	r := reachability{log: log, now: c.now}
	errDown := errors.New("connection refused")
	want := func(down, back int) {
		t.Helper()
		if d, b := logs.Count(msgDown), logs.Count(msgBack); d != down || b != back {
			t.Fatalf("%d %q and %d %q lines; want %d and %d; logs:\n%s", d, msgDown, b, msgBack, down, back, logs)
		}
	}

	r.answered()
	want(0, 0)
	r.failed(errDown)
	r.failed(errDown)
	want(1, 0)
	c.advance(3 * time.Second)
	r.answered()
	r.answered()
	want(1, 1)
	if m := lastLine(logs, msgBack); m["failed_calls"] != float64(2) || m["outage"] != float64(3000) {
		t.Errorf("back line = %v; want failed_calls 2 and outage 3000 (ms)", m)
	}
	for range 100 { // flapping: one call in two fails
		c.advance(10 * time.Millisecond)
		r.failed(errDown)
		r.answered()
	}
	want(1, 1)
	c.advance(time.Second)
	r.failed(errDown) // down for good now, but still within flapQuiet of the last "back"
	want(1, 1)
	c.advance(flapQuiet)
	r.failed(errDown)
	r.failed(errDown)
	want(2, 1)
	r.answered()
	want(2, 2)

	// flapQuiet is inclusive: an outage that starts exactly flapQuiet after the last "back"
	// is reported at once.
	c.advance(flapQuiet - time.Nanosecond)
	r.failed(errDown)
	want(2, 2)
	r.answered()
	c.advance(time.Nanosecond)
	r.failed(errDown)
	want(3, 2)
}

// lastLine returns the last logged line with this message, nil if none.
func lastLine(logs *logtest.Lines, msg string) map[string]any {
	var last map[string]any
	for _, m := range logs.All() {
		if m["message"] == msg {
			last = m
		}
	}
	return last
}

// BenchmarkRedisGet measures a Get that goes to Redis on loopback, from parallel callers:
// what a new connection with a session cookie pays; and the same with the local cache on,
// where most Gets are hits.
func BenchmarkRedisGet(b *testing.B) {
	r := redistest.Start(b)
	key := NewKeyer([]byte("secret")).Key([]byte("9f8e7d6c5b4a39281706f5e4d3c2b1a0"))
	for _, bc := range []struct {
		name      string
		cacheSize int
	}{{"redis", 0}, {"cached", 1000}} {
		b.Run(bc.name, func(b *testing.B) {
			s := newRedisStore(b, RedisConfig{URL: r.URL(), Timeout: time.Second, CacheSize: bc.cacheSize}, zerolog.Nop())
			if err := s.Set(context.Background(), key, "blue"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, ok, err := s.Get(context.Background(), key); err != nil || !ok {
						b.Errorf("Get: %t, %v", ok, err)
						return
					}
				}
			})
		})
	}
}

// TestRedisClusterSecret: replicas of one cluster get the same secret, the first one's;
// another cluster gets its own.
func TestRedisClusterSecret(t *testing.T) {
	r := redistest.Start(t)
	ctx := context.Background()
	secret := func(cluster string) []byte {
		s := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: cluster}, zerolog.Nop())
		b, err := s.ClusterSecret(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a1, a2, b := secret("a"), secret("a"), secret("b")
	if len(a1) != 64 || !bytes.Equal(a1, a2) {
		t.Fatalf("two replicas of cluster a got secrets %q and %q, want the same 64 hex digits", a1, a2)
	}
	if bytes.Equal(a1, b) {
		t.Fatal("clusters a and b share a secret")
	}
	if got := r.Do("GET", "lb:a:secret"); got != string(a1) {
		t.Fatalf("Redis holds %q for cluster a's secret", got)
	}
	down := newRedisStore(t, RedisConfig{URL: unusedRedisURL(t)}, zerolog.Nop())
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := down.ClusterSecret(short); err == nil {
		t.Fatal("ClusterSecret with no Redis: no error")
	}
}

// TestRedisKeepClusterSecret: a Redis restarted empty gets the running replica's secret back,
// so a replica started after that shares it; a secret that changed in Redis is adopted.
func TestRedisKeepClusterSecret(t *testing.T) {
	r := redistest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "c"}, zerolog.Nop())
	secret, err := a.ClusterSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adopted := make(chan []byte, 1)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		a.KeepClusterSecret(ctx, secret, 20*time.Millisecond, func(s []byte) { adopted <- s })
	}()

	r.Restart() // no persistence: the secret is gone
	deadline := time.Now().Add(waitFor)
	for r.Do("GET", "lb:c:secret") != string(secret) {
		if time.Now().After(deadline) {
			t.Fatalf("Redis restarted empty: the running replica did not store its secret again within %v", waitFor)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	late := newRedisStore(t, RedisConfig{URL: r.URL(), Cluster: "c"}, zerolog.Nop())
	if got, err := late.ClusterSecret(ctx); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("replica started after the restart got %q, %v; want the running replica's %q", got, err, secret)
	}

	r.Do("SET", "lb:c:secret", "another")
	select {
	case got := <-adopted:
		if string(got) != "another" {
			t.Fatalf("adopted %q, want the secret Redis holds", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the secret changed in Redis and was not adopted")
	}
	if got := r.Do("GET", "lb:c:secret"); got != "another" {
		t.Fatalf("Redis holds %q: the replica overwrote the cluster's secret", got)
	}
	cancel()
	<-kept
}

// The Redis host is looked up through RedisConfig.Resolver: a name only that DNS server
// knows reaches Redis.
func TestRedisHostThroughResolver(t *testing.T) {
	r := redistest.Start(t)
	dns := dnstest.Start(t)
	dns.SetA("redis.test", "127.0.0.1")
	_, port, _ := net.SplitHostPort(r.Addr())
	s := newRedisStore(t, RedisConfig{URL: "redis://redis.test:" + port + "/0", Resolver: dnswatch.Resolver(dns.Addr)}, zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping through the resolver: %v", err)
	}
	if dns.Queries() == 0 {
		t.Fatal("Redis was reached with no query to the resolver")
	}
}
