package ring

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func mustNewWith(t testing.TB, cfg Config, bs ...Backend) *Ring {
	t.Helper()
	r, err := NewWith(cfg, bs...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func weighted(weights ...int) []Backend {
	bs := backends(len(weights))
	for i, w := range weights {
		bs[i].Weight = w
	}
	return bs
}

func TestParseBalance(t *testing.T) {
	for i, name := range balanceNames {
		b, err := ParseBalance(name)
		if err != nil || b != Balance(i) || b.String() != name {
			t.Errorf("ParseBalance(%q) = %v, %v", name, b, err)
		}
	}
	if b, err := ParseBalance("LeastConn"); err != nil || b != LeastConn {
		t.Errorf("ParseBalance is case-sensitive: %v, %v", b, err)
	}
	if _, err := ParseBalance("foo"); err == nil || err.Error() != `unknown balance "foo": want `+BalanceNames {
		t.Errorf("ParseBalance(foo) error = %v", err)
	}
	if _, err := NewWith(Config{Balance: 99}); err == nil {
		t.Error("NewWith accepted an unknown balance")
	}
}

// within checks that got is want within a relative tolerance.
func within(t *testing.T, what string, got, want int, tol float64) {
	t.Helper()
	if math.Abs(float64(got-want)) > tol*float64(want) {
		t.Errorf("%s: %d, want %d ± %.0f%%", what, got, want, tol*100)
	}
}

// Idle rings (no active connections) share by weight for random and p2c: statistical, so
// within 5% of the expected count, which is over 5 standard deviations at these counts.
func TestWeightedShares(t *testing.T) {
	const n = 80_000
	for _, bal := range []Balance{Random, P2C} {
		r := mustNewWith(t, Config{Balance: bal}, weighted(1, 2, 5)...)
		got := count(picks(r, n))
		within(t, bal.String()+" A (weight 1)", got['A'], n/8, 0.05)
		within(t, bal.String()+" B (weight 2)", got['B'], n*2/8, 0.05)
		within(t, bal.String()+" C (weight 5)", got['C'], n*5/8, 0.05)
		r.SetUp("C", false)
		got = count(picks(r, n))
		if got['C'] != 0 {
			t.Errorf("%s: C down but picked %d times", bal, got['C'])
		}
		within(t, bal.String()+" A with C down", got['A'], n/3, 0.05)
	}
}

func TestLeastConn(t *testing.T) {
	r := mustNewWith(t, Config{Balance: LeastConn}, backends(3)...)
	// Idle: ties go round robin.
	if got := count(picks(r, 300)); got['A'] != 100 || got['B'] != 100 || got['C'] != 100 {
		t.Errorf("idle leastconn picks = %v, want 100 each", got)
	}
	// Each connection held goes to the least loaded: three held give one each.
	var held []Active
	for range 6 {
		c := r.Cursor()
		c.Next()
		held = append(held, c.Start())
	}
	for _, s := range r.Snapshot() {
		if s.Active != 2 {
			t.Errorf("%s holds %d, want 2 of 6", s.ID, s.Active)
		}
	}
	// With B busier, it is never the pick.
	for range 3 {
		held = append(held, r.Start("B"))
	}
	if got := count(picks(r, 50)); got['B'] != 0 {
		t.Errorf("B holds 5, A and C 2: B picked %d times", got['B'])
	}
	for i := range held {
		held[i].End()
	}

	// Weighted: A of weight 3 holds three times B's connections.
	r = mustNewWith(t, Config{Balance: LeastConn}, weighted(3, 1)...)
	held = held[:0]
	for range 400 {
		c := r.Cursor()
		c.Next()
		held = append(held, c.Start())
	}
	if s := r.Snapshot(); s[0].Active != 300 || s[1].Active != 100 {
		t.Errorf("weights 3:1 hold %d:%d of 400, want 300:100", s[0].Active, s[1].Active)
	}
}

func TestP2CAvoidsTheLoaded(t *testing.T) {
	r := mustNewWith(t, Config{Balance: P2C}, backends(4)...)
	var held []Active
	for range 100 {
		held = append(held, r.Start("A"))
	}
	// A is chosen only when both draws land on it: 1 in 16.
	got := count(picks(r, 16_000))
	within(t, "A (loaded) picks", got['A'], 1000, 0.2)
	for i := range held {
		held[i].End()
	}
}

// clients returns n synthetic client addresses, IPv4 and IPv6.
func clients(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		} else {
			out[i] = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i))
		}
	}
	return out
}

func firstFor(r *Ring, a netip.Addr) string {
	c := r.CursorFor(a)
	b, _ := c.Next()
	return b.ID
}

func TestSourceKeepsClients(t *testing.T) {
	r := mustNewWith(t, Config{Balance: Source}, backends(5)...)
	cs := clients(1000)
	before := map[netip.Addr]string{}
	perBackend := map[string]int{}
	for _, a := range cs {
		before[a] = firstFor(r, a)
		perBackend[before[a]]++
		for range 3 {
			if got := firstFor(r, a); got != before[a] {
				t.Fatalf("client %s went to %s, then %s", a, before[a], got)
			}
		}
	}
	for id, n := range perBackend {
		within(t, "clients of "+id, n, 200, 0.3)
	}
	// An IPv4 address and its IPv4-mapped form are one client.
	v4 := netip.MustParseAddr("192.0.2.7")
	if firstFor(r, v4) != firstFor(r, netip.AddrFrom16(v4.As16())) {
		t.Error("IPv4 and IPv4-mapped IPv6 of one address hash apart")
	}

	r.Remove("C")
	kept := 0
	for _, a := range cs {
		now := firstFor(r, a)
		if now == before[a] {
			kept++
		} else if before[a] != "C" {
			t.Errorf("client %s of %s moved to %s though only C went", a, before[a], now)
		}
	}
	if kept < 750 {
		t.Errorf("after removing 1 of 5, %d of 1000 clients kept their backend, want >= 750", kept)
	}
	t.Logf("kept %d of 1000 after removing 1 of 5", kept)

	// A down backend's clients spread over the rest; they come back when it does.
	r.SetUp("A", false)
	moved := map[string]int{}
	for _, a := range cs {
		if before[a] == "A" {
			moved[firstFor(r, a)]++
		}
	}
	if len(moved) < 3 || moved["A"] != 0 {
		t.Errorf("clients of down A went to %v, want spread over the other 3", moved)
	}
	r.SetUp("A", true)
	for _, a := range cs {
		if before[a] == "A" && firstFor(r, a) != "A" {
			t.Fatalf("client %s did not come back to A", a)
		}
	}
}

func TestSourceWeighted(t *testing.T) {
	r := mustNewWith(t, Config{Balance: Source}, weighted(1, 3)...)
	got := map[string]int{}
	for _, a := range clients(4000) {
		got[firstFor(r, a)]++
	}
	within(t, "clients of A (weight 1)", got["A"], 1000, 0.1)
}

func TestSlowStart(t *testing.T) {
	const ramp = 10 * time.Second
	r := mustNewWith(t, Config{SlowStart: ramp}, backends(3)...)
	if n, done := r.Ramp(time.Now()); n != 0 || done != nil {
		t.Errorf("backends of New ramp: %d, %v; they start at full weight", n, done)
	}
	r.SetUp("B", false)
	start := time.Now()
	r.SetUp("B", true)
	// Early in the ramp, B has 10% of the weight of each peer: 100 of 2100 picks.
	if got := count(picks(r, 2100)); got['B'] != 100 || got['A'] != 1000 {
		t.Errorf("at the start of B's ramp: picks %v, want B 100 of 2100", got)
	}
	if s := r.Snapshot()[1]; s.EffectiveWeight != 0.1 || s.Weight != 1 {
		t.Errorf("B at start: weight %d in effect %v, want 1 and 0.1", s.Weight, s.EffectiveWeight)
	}
	if n, done := r.Ramp(start.Add(ramp / 2)); n != 1 || done != nil {
		t.Errorf("half way: Ramp = %d, %v; want 1 ramping", n, done)
	}
	if s := r.Snapshot()[1]; math.Abs(s.EffectiveWeight-0.55) > 0.01 {
		t.Errorf("B half way: weight in effect %v, want 0.55", s.EffectiveWeight)
	}
	if n, done := r.Ramp(start.Add(ramp + time.Second)); n != 0 || len(done) != 1 || done[0] != "B" {
		t.Errorf("at the end: Ramp = %d, %v; want B done", n, done)
	}
	if got := count(picks(r, 300)); got['B'] != 100 {
		t.Errorf("after the ramp: picks %v, want B 100 of 300", got)
	}
	// An added backend ramps too, and one set Up again after draining.
	r.Add(Backend{ID: "D", Addr: "10.0.0.4:80"})
	r.SetState("A", Draining)
	r.SetState("A", Up)
	if n, _ := r.Ramp(time.Now()); n != 2 {
		t.Errorf("after Add(D) and A undrained: %d ramping, want 2", n)
	}
	for _, bal := range []Balance{Random, LeastConn, P2C} {
		r := mustNewWith(t, Config{Balance: bal, SlowStart: ramp}, backends(2)...)
		r.SetUp("B", false)
		r.SetUp("B", true)
		got := count(picks(r, 11_000))
		if bal != LeastConn && got['B'] > 2000 {
			t.Errorf("%s: B early in its ramp got %d of 11000 picks, want about 1000", bal, got['B'])
		}
	}
}

// TestSlowBackend is the ring-level half of "a backend 20× slower": 1,000 concurrent
// clients, each holding its connection 1 ms, or 20 ms on backend E. Round robin gives E its
// fifth whatever; leastconn and p2c see E's connections pile up and send it fewer.
func TestSlowBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("holds connections for about a second")
	}
	const clientsN, each = 1000, 8
	share := map[Balance]float64{}
	for _, bal := range []Balance{RoundRobin, LeastConn, P2C} {
		r := mustNewWith(t, Config{Balance: bal}, backends(5)...)
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		begin := make(chan struct{}) // every client is there before the first pick
		for range clientsN {
			wg.Go(func() {
				<-begin
				for range each {
					c := r.Cursor()
					b, _ := c.Next()
					a := c.Start()
					hold := time.Millisecond
					if b.ID == "E" {
						hold *= 20
					}
					time.Sleep(hold) // the request's simulated service time
					a.End()
					mu.Lock()
					got[b.ID]++
					mu.Unlock()
				}
			})
		}
		close(begin)
		wg.Wait()
		share[bal] = float64(got["E"]) / (clientsN * each)
		t.Logf("%s: slow E got %.1f%% of %d requests", bal, 100*share[bal], clientsN*each)
	}
	for _, bal := range []Balance{LeastConn, P2C} {
		if share[bal] > share[RoundRobin]*0.7 {
			t.Errorf("%s gave slow E %.1f%%, round robin %.1f%%: want measurably fewer", bal, 100*share[bal], 100*share[RoundRobin])
		}
	}
}

func TestPicksNoAllocs(t *testing.T) {
	client := netip.MustParseAddr("2001:db8::1")
	for i := range balanceNames {
		r := mustNewWith(t, Config{Balance: Balance(i)}, weighted(1, 2, 3, 4)...)
		r.SetUp("B", false)
		f := func() {
			c := r.CursorFor(client)
			for _, ok := c.Next(); ok; _, ok = c.Next() {
				a := c.Start()
				a.End()
			}
			r.Next()
		}
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs a connection, want 0", Balance(i), n)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	client := netip.MustParseAddr("192.0.2.1")
	for i := range balanceNames {
		r := mustNewWith(b, Config{Balance: Balance(i)}, weighted(1, 2, 3, 4, 1, 2, 3, 4)...)
		b.Run(Balance(i).String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c := r.CursorFor(client)
				c.Next()
				a := c.Start()
				a.End()
			}
		})
		b.Run(Balance(i).String()+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c := r.CursorFor(client)
					c.Next()
					a := c.Start()
					a.End()
				}
			})
		})
	}
}

// Under Source, a Cursor made without the client spreads picks rather than send every
// connection to one backend.
func TestSourceWithoutClient(t *testing.T) {
	r := mustNewWith(t, Config{Balance: Source}, backends(4)...)
	got := map[string]int{}
	for range 400 {
		c := r.Cursor()
		b, _ := c.Next()
		got[b.ID]++
	}
	if len(got) != 4 {
		t.Errorf("Cursor() under Source went to %v, want all 4 backends", got)
	}
}
