package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/dnswatch"
	"lb/internal/dnstest"
	"lb/internal/logtest"
	"lb/internal/redistest"
)

// failoverWait bounds a wait on Sentinel: it sees the master down after down-after (500 ms),
// then elects itself and promotes the replica, a second or two more on a loaded machine.
const failoverWait = 20 * time.Second

// await polls cond until it holds, failing the test after within.
func await(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// call is one store call of the traffic during a failover.
type call struct {
	at   time.Time // when it returned
	took time.Duration
	set  string // the key a Set wrote; "" for a Get
	err  error
}

// TestRedisSentinelFailover kills the master under a store on redis+sentinel:// while
// calls flow with the default Timeout (50 ms): once Sentinel has promoted the replica, the
// sessions learned before are found (the replica had them), new ones are learned, the
// cluster's secret is the same, and every Set that succeeded after the kill is kept. It
// logs how long calls failed.
func TestRedisSentinelFailover(t *testing.T) {
	// 2 s, not less: on a busy machine a master slow to answer Sentinel's PINGs for half a
	// second was taken for dead before the test killed it.
	set := redistest.StartSentinelSet(t, redistest.SentinelConfig{DownAfter: 2 * time.Second})
	master, replica, url := set.Master, set.Replica, set.URL()
	ctx := context.Background()
	// Learning and checking go through a store with the tests' Timeout, which a loaded
	// machine meets; the traffic measured goes through one with the default.
	steady := newRedisStore(t, RedisConfig{URL: url, Cluster: "ha"}, zerolog.Nop())
	logs, log := logtest.New()
	measured := newRedisStore(t, RedisConfig{URL: url, Cluster: "ha", Timeout: DefaultRedisTimeout}, log)

	secret, err := steady.ClusterSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const learned = 50
	for i := range learned {
		mustSet(t, steady, fmt.Sprintf("old%d", i), fmt.Sprintf("b%d", i%3))
	}
	// Replication is asynchronous: make sure the replica has them before the kill.
	if got := master.Reply("WAIT", "1", "2000"); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("WAIT 1 2000 = %q; want 1 replica", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for got := replica.Do("GET", "lb:ha:s:old7"); got != "b1"; got = replica.Do("GET", "lb:ha:s:old7") {
		if time.Now().After(deadline) {
			t.Fatalf("the replica holds %q for old7 5 s after WAIT; want b1", got)
		}
		time.Sleep(10 * time.Millisecond) // polling the replica, bounded by the deadline
	}

	// Traffic: a Get of a session learned before and a Set of a new one, every 5 ms.
	var calls []call
	var okAfterKill atomic.Int64 // calls that succeeded after the kill
	var killed atomic.Bool
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			after := killed.Load()
			start := time.Now()
			_, _, err := measured.Get(ctx, fmt.Sprintf("old%d", i%learned))
			calls = append(calls, call{at: time.Now(), took: time.Since(start), err: err})
			ok := err == nil
			key := fmt.Sprintf("new%d", i)
			start = time.Now()
			err = measured.Set(ctx, key, "b9")
			calls = append(calls, call{at: time.Now(), took: time.Since(start), set: key, err: err})
			if ok && err == nil && after {
				okAfterKill.Add(1)
			}
		}
	}()
	stopTraffic := sync1(func() { close(stop); <-done })
	defer stopTraffic()

	time.Sleep(200 * time.Millisecond) // traffic before the kill, to compare with
	oldPort := master.Port()
	killedAt := time.Now()
	killed.Store(true)
	master.Stop() // SIGKILL
	set.AwaitPromotion(failoverWait)
	promoted := time.Since(killedAt)
	await(t, "calls to succeed through the new master", failoverWait, func() bool { return okAfterKill.Load() >= 20 })
	stopTraffic()

	var before, during int
	var firstFail, lastFail time.Time
	var slowest time.Duration // of the failed calls
	kinds := map[string]int{} // the errors, by their text without ports
	for _, c := range calls {
		if c.err != nil {
			kinds[strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return -1
				}
				return r
			}, c.err.Error())]++
		}
		if c.err != nil {
			slowest = max(slowest, c.took)
		}
		switch {
		case c.err == nil:
		case c.at.Before(killedAt):
			before++
		default:
			during++
			if firstFail.IsZero() {
				firstFail = c.at
			}
			lastFail = c.at
		}
	}
	t.Logf("master %d killed; Sentinel named the replica %d after %v; %d calls, %d failed before the kill, %d after it, from +%v to +%v",
		oldPort, replica.Port(), promoted.Round(time.Millisecond), len(calls), before, during,
		firstFail.Sub(killedAt).Round(time.Millisecond), lastFail.Sub(killedAt).Round(time.Millisecond))
	t.Logf("slowest failed call %v; store log: %d unreachable, %d back; errors: %v", slowest, logs.Count(msgDown), logs.Count(msgBack), kinds)
	if slowest > DefaultRedisTimeout+callSlack {
		t.Errorf("a call failed after %v; want within Timeout %v (+%v)", slowest, DefaultRedisTimeout, callSlack)
	}

	for i := range learned {
		wantID(t, steady, fmt.Sprintf("old%d", i), fmt.Sprintf("b%d", i%3))
	}
	for _, c := range calls {
		if c.set != "" && c.err == nil && c.at.After(killedAt) {
			wantID(t, steady, c.set, "b9")
		}
	}
	mustSet(t, steady, "fresh", "b2")
	wantID(t, measured, "fresh", "b2")
	if got := replica.Do("GET", "lb:ha:s:fresh"); got != "b2" {
		t.Errorf("the promoted replica holds %q for a session learned after the failover; want b2", got)
	}
	again, err := newRedisStore(t, RedisConfig{URL: url, Cluster: "ha"}, zerolog.Nop()).ClusterSecret(ctx)
	if err != nil || !bytes.Equal(again, secret) {
		t.Errorf("the cluster's secret after the failover: %q, %v; want the one before, %q", again, err, secret)
	}
}

// sync1 returns f to be run once, whoever calls it first.
func sync1(f func()) func() {
	var done atomic.Bool
	return func() {
		if !done.Swap(true) {
			f()
		}
	}
}

// TestRedisCluster: a store on redis+cluster:// with one seed node learns sessions on
// every master of a 3-node Redis Cluster (their keys hash to slots all over), a store
// seeded with every node finds them, and the cluster's secret is shared. With a node
// killed, every call still ends within Timeout, and those of its slots fail.
func TestRedisCluster(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	ctx := context.Background()
	one := newRedisStore(t, RedisConfig{URL: "redis+cluster://" + nodes[0].Addr(), Cluster: "c"}, zerolog.Nop())
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.Addr())
	}
	all := newRedisStore(t, RedisConfig{URL: "redis+cluster://" + strings.Join(addrs, ","), Cluster: "c"}, zerolog.Nop())

	const n = 60
	for i := range n {
		mustSet(t, one, fmt.Sprintf("k%d", i), fmt.Sprintf("b%d", i%4))
	}
	for i := range n {
		wantID(t, all, fmt.Sprintf("k%d", i), fmt.Sprintf("b%d", i%4))
	}
	for _, node := range nodes {
		if keys := node.Do("DBSIZE"); keys == ":0" {
			t.Errorf("node %s holds no key of %d sessions: the store did not spread them", node.Addr(), n)
		}
	}
	if err := all.Ping(ctx); err != nil {
		t.Error(err)
	}
	a, err := one.ClusterSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := all.ClusterSecret(ctx)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("two stores of the cluster got secrets %q and %q (%v); want the same", a, b, err)
	}

	nodes[1].Stop()
	failed := 0
	var slowest, total time.Duration
	for i := range n {
		start := time.Now()
		_, _, err := all.Get(ctx, fmt.Sprintf("k%d", i))
		took := time.Since(start)
		if err != nil {
			slowest, total = max(slowest, took), total+took
		}
		if took > testTimeout+callSlack {
			t.Errorf("Get of k%d with a node killed took %v; want at most Timeout %v (+%v)", i, took, testTimeout, callSlack)
		}
		if err != nil {
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("Get of k%d with a node killed: %v; want ErrUnavailable", i, err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Errorf("no Get of %d failed with one node of three killed", n)
	}
	t.Logf("one node of three killed: %d of %d Gets failed, after %v on average, the slowest after %v (Timeout %v)",
		failed, n, total/time.Duration(max(failed, 1)), slowest, testTimeout)
}

// The Sentinels' and the Cluster nodes' hosts are looked up through RedisConfig.Resolver:
// names only that DNS server knows reach them.
func TestRedisHAHostsThroughResolver(t *testing.T) {
	set := redistest.StartSentinelSet(t, redistest.SentinelConfig{})
	nodes := redistest.StartCluster(t, 3)
	dns := dnstest.Start(t)
	dns.SetA("sentinel.test", "127.0.0.1")
	dns.SetA("node.test", "127.0.0.1")
	for _, url := range []string{
		fmt.Sprintf("redis+sentinel://sentinel.test:%d/m/0", set.Sentinel.Port()),
		fmt.Sprintf("redis+cluster://node.test:%d", nodes[0].Port()),
	} {
		before := dns.Queries()
		s := newRedisStore(t, RedisConfig{URL: url, Resolver: dnswatch.Resolver(dns.Addr)}, zerolog.Nop())
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err := s.Set(ctx, "k", "b1")
		cancel()
		if err != nil {
			t.Fatalf("%s: Set through the resolver: %v", url, err)
		}
		if dns.Queries() == before {
			t.Fatalf("%s: Redis was reached with no query to the resolver", url)
		}
	}
}
