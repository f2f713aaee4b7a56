package discover

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/dnswatch"
	"lb/internal/dnstest"
	"lb/ring"
	"lb/serversfile"
)

// within bounds every wait on a condition; a healthy run meets each in milliseconds.
const within = 10 * time.Second

// inRing returns the ring's backends as addr → "id up/down weight".
func inRing(r *ring.Ring) map[string]ring.Status {
	out := map[string]ring.Status{}
	for _, s := range r.Snapshot() {
		out[s.Addr] = s
	}
	return out
}

func waitRing(t *testing.T, r *ring.Ring, what string, cond func(map[string]ring.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond(inRing(r)) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; the ring holds %v", what, within, inRing(r))
		}
		time.Sleep(5 * time.Millisecond) // polling the condition, not waiting for it to happen
	}
}

// addrs lists the ring's addresses, sorted, for comparing with an expected set.
func addrs(m map[string]ring.Status) []string {
	return slices.Sorted(maps.Keys(m))
}

func sorted(a ...string) []string { return slices.Sorted(slices.Values(a)) }

// running starts d.Run and stops it when the test ends.
func running(t *testing.T, d *Discoverer) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestAddressesComeAndGo(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetA("app.test", "127.0.0.11", "127.0.0.12")
	r, err := ring.New(ring.Backend{ID: "fixed", Addr: "127.0.0.1:9000"})
	if err != nil {
		t.Fatal(err)
	}
	d := New(r, []Source{{Mode: "a", Name: "app.test", Port: 8080, Weight: 3}},
		Config{Every: 50 * time.Millisecond, Check: 10 * time.Millisecond, Resolver: dnswatch.Resolver(srv.Addr)}, zerolog.Nop())
	if n := d.Init(context.Background()); n != 2 {
		t.Fatalf("Init added %d backends, want 2", n)
	}
	got := inRing(r)
	if want := sorted("127.0.0.1:9000", "127.0.0.11:8080", "127.0.0.12:8080"); !slices.Equal(addrs(got), want) {
		t.Fatalf("ring after Init: %v, want %v", addrs(got), want)
	}
	for _, a := range []string{"127.0.0.11:8080", "127.0.0.12:8080"} {
		s := got[a]
		if s.Up || s.Weight != 3 || s.ID != serversfile.AddrID(a, false) {
			t.Errorf("%s: up %v weight %d id %q; want down (not probed yet), weight 3, id %q", a, s.Up, s.Weight, s.ID, serversfile.AddrID(a, false))
		}
	}
	r.SetUp(got["127.0.0.11:8080"].ID, true) // as the prober would
	running(t, d)

	srv.SetA("app.test", "127.0.0.12", "127.0.0.13")
	waitRing(t, r, "11 gone, 13 found", func(m map[string]ring.Status) bool {
		return slices.Equal(addrs(m), sorted("127.0.0.1:9000", "127.0.0.12:8080", "127.0.0.13:8080"))
	})
	if s := inRing(r)["127.0.0.13:8080"]; s.Up {
		t.Error("a new address came in up; it must wait for its probes")
	}

	// A failing DNS server, then one that answers nothing: the last good set stays.
	srv.Fail("app.test", true)
	before := srv.Queries()
	waitRing(t, r, "a few failed lookups", func(map[string]ring.Status) bool { return srv.Queries() >= before+2 })
	srv.Fail("app.test", false)
	srv.SetA("app.test")
	before = srv.Queries()
	waitRing(t, r, "a few empty answers", func(map[string]ring.Status) bool { return srv.Queries() >= before+2 })
	if got := addrs(inRing(r)); !slices.Equal(got, sorted("127.0.0.1:9000", "127.0.0.12:8080", "127.0.0.13:8080")) {
		t.Fatalf("after failed and empty lookups the ring holds %v; want the last good set kept", got)
	}

	// An address that comes back gets the id it had: cookies that named it still do.
	srv.SetA("app.test", "127.0.0.11")
	waitRing(t, r, "11 back alone", func(m map[string]ring.Status) bool {
		return slices.Equal(addrs(m), sorted("127.0.0.1:9000", "127.0.0.11:8080"))
	})
	if id := inRing(r)["127.0.0.11:8080"].ID; id != got["127.0.0.11:8080"].ID {
		t.Fatalf("127.0.0.11:8080 came back as %q, was %q", id, got["127.0.0.11:8080"].ID)
	}
}

func TestSRVPrioritiesAndWeights(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetA("a.test", "127.0.0.21")
	srv.SetA("b.test", "127.0.0.22")
	srv.SetA("c.test", "::1")
	srv.SetSRV("_http._tcp.app.test",
		dnstest.SRV{Target: "a.test", Port: 8001, Priority: 10, Weight: 3},
		dnstest.SRV{Target: "b.test", Port: 8002, Priority: 10, Weight: 1},
		dnstest.SRV{Target: "c.test", Port: 8003, Priority: 20, Weight: 5})
	r, err := ring.New()
	if err != nil {
		t.Fatal(err)
	}
	d := New(r, []Source{{Mode: "srv", Name: "_http._tcp.app.test"}},
		Config{Every: 50 * time.Millisecond, Check: 10 * time.Millisecond, Resolver: dnswatch.Resolver(srv.Addr)}, zerolog.Nop())
	if n := d.Init(context.Background()); n != 3 {
		t.Fatalf("Init added %d backends, want all 3 priorities' (none is up yet)", n)
	}
	got := inRing(r)
	if got["127.0.0.21:8001"].Weight != 3 || got["127.0.0.22:8002"].Weight != 1 || got["[::1]:8003"].Weight != 5 {
		t.Fatalf("weights in the ring: %v; want the SRV weights 3, 1, 5", got)
	}
	ids := map[string]string{}
	for a, s := range got {
		ids[a] = s.ID
	}
	running(t, d)

	r.SetUp(ids["127.0.0.22:8002"], true) // priority 10 has one up: 20 goes
	waitRing(t, r, "priority 20 removed", func(m map[string]ring.Status) bool {
		return slices.Equal(addrs(m), sorted("127.0.0.21:8001", "127.0.0.22:8002"))
	})
	r.SetUp(ids["127.0.0.21:8001"], true)
	picks := map[string]int{}
	for range 400 {
		b, _ := r.Next()
		picks[b.Addr]++
	}
	if picks["127.0.0.21:8001"] != 300 || picks["127.0.0.22:8002"] != 100 {
		t.Fatalf("400 picks: %v; want 300 and 100 (weights 3:1)", picks)
	}

	r.SetUp(ids["127.0.0.21:8001"], false) // priority 10 all down: 20 comes back to be probed
	r.SetUp(ids["127.0.0.22:8002"], false)
	waitRing(t, r, "priority 20 back", func(m map[string]ring.Status) bool { _, ok := m["[::1]:8003"]; return ok })
	r.SetUp(ids["[::1]:8003"], true)
	before := srv.Queries() // a few lookups and checks: nothing may change while 10 stays down
	waitRing(t, r, "two more lookups", func(map[string]ring.Status) bool { return srv.Queries() >= before+2 })
	if got := addrs(inRing(r)); len(got) != 3 {
		t.Fatalf("with priority 10 down and 20 up the ring holds %v; want all three", got)
	}
	r.SetUp(ids["127.0.0.22:8002"], true)
	waitRing(t, r, "priority 20 drained again", func(m map[string]ring.Status) bool { _, ok := m["[::1]:8003"]; return !ok })
}

func TestSetSources(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetA("one.test", "127.0.0.41")
	srv.SetA("two.test", "127.0.0.42")
	r, err := ring.New()
	if err != nil {
		t.Fatal(err)
	}
	one := Source{Mode: "a", Name: "one.test", Port: 80}
	d := New(r, []Source{one}, Config{Every: time.Hour, Check: 10 * time.Millisecond, Resolver: dnswatch.Resolver(srv.Addr)}, zerolog.Nop())
	d.Init(context.Background())
	id := inRing(r)["127.0.0.41:80"].ID
	r.SetUp(id, true)
	running(t, d)

	// one stays (its backend keeps its up state: no new lookup, no probe needed), two comes.
	d.SetSources([]Source{{Mode: "a", Name: "two.test", Port: 80}, one})
	waitRing(t, r, "two.test found", func(m map[string]ring.Status) bool { _, ok := m["127.0.0.42:80"]; return ok })
	if s := inRing(r)["127.0.0.41:80"]; s.ID != id || !s.Up {
		t.Fatalf("one.test's backend after SetSources: %+v; want it kept, up, as %s", s, id)
	}
	d.SetSources([]Source{{Mode: "a", Name: "two.test", Port: 80}})
	waitRing(t, r, "one.test's backend removed", func(m map[string]ring.Status) bool {
		return slices.Equal(addrs(m), []string{"127.0.0.42:80"})
	})
}

// BenchmarkApplyUnchanged is the cost of one check of a source of 100 pods when DNS says
// the same as before: what every --resolve-every costs off the data path.
func BenchmarkApplyUnchanged(b *testing.B) {
	r, _ := ring.New()
	d := New(r, []Source{{Mode: "a", Name: "x", Port: 80}}, Config{}, zerolog.Nop())
	s := d.sources[0]
	good := map[string]target{}
	for i := range 100 {
		good[fmt.Sprintf("10.0.0.%d:80", i)] = target{weight: 1}
	}
	s.good.Store(&good)
	d.apply(s)
	b.ReportAllocs()
	for b.Loop() {
		d.apply(s)
	}
}
