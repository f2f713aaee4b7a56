//go:build linux

package l4

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/dnswatch"
	"lb/internal/logtest"
	"lb/ring"
)

// fakeDNS replaces lookupIP for one test: answer gives the addresses of a name.
func fakeDNS(t testing.TB, answer func(ctx context.Context, host string) ([]netip.Addr, error)) *atomic.Int64 {
	var calls atomic.Int64
	saved := lookupIP
	lookupIP = func(ctx context.Context, _ *net.Resolver, host string) ([]netip.Addr, error) {
		calls.Add(1)
		return answer(ctx, host)
	}
	t.Cleanup(func() { lookupIP = saved })
	return &calls
}

// listenOn starts an HTTP backend answering name on ip:port; port 0 picks one.
func listenOn(t *testing.T, ip string, port int, name string) (*net.TCPListener, bool) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return nil, false
	}
	b := &testBackend{ln: ln}
	b.wg.Add(1)
	go b.serve(httpName(name))
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return ln.(*net.TCPListener), true
}

// twoAddressesOnePort starts backends "two" on 127.0.0.2 and "three" on 127.0.0.3, on one
// port: a name moving from one to the other is a backend whose IP changed.
func twoAddressesOnePort(t *testing.T) int {
	for range 20 {
		ln, ok := listenOn(t, "127.0.0.2", 0, "two")
		if !ok {
			t.Fatal("cannot listen on 127.0.0.2")
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if _, ok := listenOn(t, "127.0.0.3", port, "three"); ok {
			return port
		}
		ln.Close()
	}
	t.Fatal("no port free on both 127.0.0.2 and 127.0.0.3")
	return 0
}

func TestBackendNameLookedUpOffTheLoop(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	calls := fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		select { // a DNS server that does not answer until told to
		case <-release:
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	slow := startBackend(t, httpName("slow"))
	fast := startBackend(t, httpName("fast"))
	var slowFailures atomic.Int64
	cfg := testConfig()
	cfg.OnDialFailure = func(b ring.Backend) {
		if b.ID == "slow" {
			slowFailures.Add(1)
		}
	}
	s := startServer(t, cfg, fast.addr())
	_, port, _ := net.SplitHostPort(slow.addr())
	if err := s.ring.Add(ring.Backend{ID: "slow", Addr: "slow.test:" + port, Weight: 1}); err != nil {
		t.Fatal(err)
	}

	// While the name's lookup hangs, every connection goes to the other backend at once.
	for i := range 20 {
		start := time.Now()
		if _, body := get(t, s.addr, ""); body != "fast" {
			t.Fatalf("request %d went to %q while slow.test was being looked up", i, body)
		}
		if d := time.Since(start); d > 3*time.Second { // a lookup on the loop would take lookupTimeout, 5 s
			t.Fatalf("request %d took %v: the lookup stalled the loop", i, d)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d lookups for 20 connections, want 1: names are looked up off the loop, once", n)
	}
	// Not yet resolved is not failing: health counts every dial failure against a backend.
	if n := slowFailures.Load(); n != 0 {
		t.Fatalf("%d dial failures reported for slow.test while its first lookup was under way, want 0", n)
	}

	once.Do(func() { close(release) })
	waitFor(t, "slow.test to take connections once resolved", func() bool {
		_, body := get(t, s.addr, "")
		return body == "slow"
	})
}

func TestBackendNameFollowsAddressChange(t *testing.T) {
	port := twoAddressesOnePort(t)
	var ip atomic.Pointer[netip.Addr]
	two := netip.MustParseAddr("127.0.0.2")
	ip.Store(&two)
	fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{*ip.Load()}, nil
	})
	cfg := testConfig()
	cfg.ResolveEvery = 20 * time.Millisecond
	s := startServer(t, cfg, "app.test:"+strconv.Itoa(port))

	if _, body := get(t, s.addr, ""); body != "two" {
		t.Fatalf("first request went to %q, want the backend app.test resolved to", body)
	}
	three := netip.MustParseAddr("127.0.0.3")
	ip.Store(&three)
	waitFor(t, "connections to follow app.test to its new address", func() bool {
		_, body := get(t, s.addr, "")
		return body == "three"
	})
}

func TestFailedLookupKeepsLastAddressAndIsNotRetriedPerConnection(t *testing.T) {
	port := twoAddressesOnePort(t)
	var failing atomic.Bool
	calls := fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host == "gone.test" || failing.Load() {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
	})
	cfg := testConfig()
	cfg.ResolveEvery = time.Hour // retries after a failure start at a second
	other := startBackend(t, httpName("other"))
	s := startServer(t, cfg, "app.test:"+strconv.Itoa(port))
	if err := s.ring.Add(ring.Backend{ID: "gone", Addr: "gone.test:" + strconv.Itoa(port), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.ring.Add(ring.Backend{ID: "other", Addr: other.addr(), Weight: 1}); err != nil {
		t.Fatal(err)
	}

	// gone.test never resolved: its picks fall through to the next backend. app.test keeps
	// the address it had once its lookups fail.
	failing.Store(true)
	app := s.resolver.addr("app.test:" + strconv.Itoa(port))
	s.resolver.watch.Refresh(app.name) // look it up again now
	waitFor(t, "app.test's lookup to fail", func() bool { return app.err.Load() != nil })
	before := calls.Load()
	seen := map[string]int{}
	for range 30 {
		_, body := get(t, s.addr, "")
		seen[body]++
	}
	if seen["two"] == 0 || seen["other"] == 0 || len(seen) != 2 {
		t.Fatalf("answers %v: want app.test at its last address (two) and other, nothing else", seen)
	}
	// A retry a second after each failure is fine; one per pick is not (10 picks of gone.test).
	if n := calls.Load() - before; n > 4 {
		t.Fatalf("%d lookups during 30 connections: failed names are retried on a timer, not per pick", n)
	}
}

// A failed lookup is retried after dnswatch.FirstRetry, not at the next ResolveEvery: a backend
// whose DNS record is not there yet when lb starts gets connections a second later.
func TestFailedLookupRetriedAfterASecond(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		if fail.Swap(false) {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	r := newResolver(dnswatch.Config{Every: time.Hour}, nil, zerolog.Nop())
	defer r.stop()
	d := r.addr("app.test:80")
	waitFor(t, "the first lookup to fail", func() bool { return d.err.Load() != nil })
	failed := time.Now()
	for d.sa.Load() == nil {
		if time.Since(failed) > dnswatch.FirstRetry+3*time.Second {
			t.Fatal("a failed name was not looked up again a second later")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A name with several addresses, one of them dead: the connection that meets the dead one
// goes to another backend, and the next connections go to the live address.
func TestNameMovesToNextAddressWhenADialFails(t *testing.T) {
	ln, _ := listenOn(t, "127.0.0.3", 0, "three")
	port := ln.Addr().(*net.TCPAddr).Port
	fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		// 127.0.0.2 first: nothing listens there on this port.
		return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}, nil
	})
	other := startBackend(t, httpName("other"))
	s := startServer(t, testConfig(), "app.test:"+strconv.Itoa(port), other.addr())
	var got []string
	for range 6 {
		_, body := get(t, s.addr, "")
		got = append(got, body)
	}
	three := 0
	for _, b := range got {
		if b == "three" {
			three++
		}
	}
	if three < 2 {
		t.Fatalf("answers %v: app.test stayed on its dead address", got)
	}
}

func TestChooseKeepsCurrentAndPrefersIPv4(t *testing.T) {
	a, b, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("::2")
	mapped := netip.AddrFrom16(b.As16())
	cases := []struct {
		ips     []netip.Addr
		current netip.Addr
		want    netip.Addr
	}{
		{[]netip.Addr{v6, a, b}, netip.Addr{}, a},
		{[]netip.Addr{a, b}, b, b},       // reordered answers do not move lb
		{[]netip.Addr{v6}, a, v6},        // gone: the first left
		{[]netip.Addr{v6, mapped}, b, b}, // an IPv4-mapped answer is that IPv4 address
		{nil, a, netip.Addr{}},
	}
	for _, c := range cases {
		if got := choose(c.ips, c.current); got != c.want {
			t.Errorf("choose(%v, %v) = %v, want %v", c.ips, c.current, got, c.want)
		}
	}
}

// An IPv6 zone names the interface of a link-local address: it becomes the scope id that
// connect(2) needs, and an unknown interface is an error, not a silent dial without it.
func TestIPv6ZoneBecomesScopeID(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo interface")
	}
	r := newResolver(dnswatch.Config{Every: time.Hour}, nil, zerolog.Nop())
	defer r.stop()
	for _, addr := range []string{"[fe80::1%lo]:80", "[fe80::1%" + strconv.Itoa(lo.Index) + "]:80"} {
		sa, err := r.addr(addr).dialable()
		if err != nil || sa.raw.Scope_id != uint32(lo.Index) {
			t.Errorf("%s: scope id %v, %v; want lo's index %d", addr, sa, err, lo.Index)
		}
	}
	if _, err := r.addr("[fe80::1%nosuchif0]:80").dialable(); err == nil || !strings.Contains(err.Error(), "no interface nosuchif0") {
		t.Errorf("unknown interface: %v, want an error naming it", err)
	}
	if _, err := r.addr("[fe80::1%2000000000]:80").dialable(); err == nil || !strings.Contains(err.Error(), "no interface 2000000000") {
		t.Errorf("unknown interface index: %v, want an error naming it", err)
	}
}

// Dials that fail while lookups are under way (run with -race): each failed dial moves the
// name on to its other address, and the lookups meanwhile, which find the address in use
// among their answers, leave it there.
func TestDialFailuresDuringLookups(t *testing.T) {
	two := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	calls := fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		return slices.Clone(two), nil
	})
	r := newResolver(dnswatch.Config{Every: time.Millisecond}, nil, zerolog.Nop())
	defer r.stop()
	d := r.addr("app.test:80")
	waitFor(t, "the name to resolve", func() bool { return d.sa.Load() != nil })
	dialing := func() netip.Addr {
		r.mu.Lock()
		defer r.mu.Unlock()
		return d.ip
	}
	ip := dialing()
	start, deadline := calls.Load(), time.Now().Add(10*time.Second)
	// Until lookups have run among the dials: 20 of them, every millisecond.
	for dials := 0; dials < 100 || calls.Load()-start < 20; dials++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d dials and %d lookups in 10 s: want 100 and 20", dials, calls.Load()-start)
		}
		sa, err := d.dialable()
		if err != nil {
			t.Fatal(err)
		}
		if now := dialing(); now != ip {
			t.Fatalf("dial %d: the name moved from %v to %v with no dial failed since: a lookup moved it", dials, ip, now)
		}
		r.dialFailed(d, sa)
		next := dialing()
		if next == ip || !slices.Contains(two, next) {
			t.Fatalf("dial %d: a failed dial at %v left the name at %v, want it moved to its other address", dials, ip, next)
		}
		ip = next
		runtime.Gosched()
	}
}

// A name that keeps failing is logged once, not once per lookup; its recovery once too.
func TestFailingNameLoggedOnce(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	calls := fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		if failing.Load() {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	log, logger := logtest.New()
	r := newResolver(dnswatch.Config{Every: 10 * time.Millisecond}, nil, logger) // retries every 10 ms
	defer r.stop()
	d := r.addr("app.test:80")
	waitFor(t, "five failed lookups", func() bool { return calls.Load() >= 5 })
	failing.Store(false)
	waitFor(t, "the name to resolve", func() bool { return d.sa.Load() != nil })
	if n := log.Count("cannot resolve backend; it gets no connections until it resolves"); n != 1 {
		t.Fatalf("%d warnings for %d failed lookups, want 1:\n%s", n, calls.Load()-1, log.String())
	}
	waitFor(t, "the recovery to be logged", func() bool { return log.Count("backend resolves again") == 1 })
}

// A name taken out of the ring is no longer looked up; put back, it is looked up again.
func TestRemovedNameNotLookedUp(t *testing.T) {
	var mu sync.Mutex
	lookups := map[string]int{}
	count := func(host string) int {
		mu.Lock()
		defer mu.Unlock()
		return lookups[host]
	}
	fakeDNS(t, func(ctx context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		lookups[host]++
		mu.Unlock()
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	app, other := ring.Backend{ID: "app", Addr: "app.test:80"}, ring.Backend{ID: "other", Addr: "other.test:80"}
	rg, err := ring.New(app, other)
	if err != nil {
		t.Fatal(err)
	}
	r := newResolver(dnswatch.Config{Every: 5 * time.Millisecond}, []*ring.Ring{rg}, zerolog.Nop())
	defer r.stop()
	d := r.addr(app.Addr)
	r.addr(other.Addr)
	waitFor(t, "the name to resolve", func() bool { return d.sa.Load() != nil })
	waitFor(t, "the name to be looked up again every 5 ms", func() bool { return count("app.test") >= 3 })

	rg.Remove(app.ID)
	// The second lookup of the other name from now on was started by a round that began
	// after the first had ended, so after the removal: from that round on, the name is not
	// looked up. With no lookup of it in flight then, none can start.
	mark := count("other.test")
	waitFor(t, "a round of lookups since the removal, and none of the name in flight", func() bool {
		return count("other.test") >= mark+2 && !r.watch.Busy(d.name)
	})
	before, mark := count("app.test"), count("other.test")
	waitFor(t, "ten lookups of the name still in the ring", func() bool { return count("other.test") >= mark+10 })
	if n := count("app.test") - before; n != 0 {
		t.Fatalf("%d lookups of a name no longer in the ring while the one still in it had 10, want 0", n)
	}

	if err := rg.Add(app); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the name, back in the ring, to be looked up again", func() bool { return count("app.test") > before })
}

// BenchmarkConnect is a loop's dial of a backend, by its IP address and by a name already
// resolved: the lookup of the address to dial may not allocate.
func BenchmarkConnect(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: dials end in its backlog
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	fakeDNS(b, func(ctx context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	rg, err := ring.New(ring.Backend{ID: "app", Addr: "app.test:" + port})
	if err != nil {
		b.Fatal(err)
	}
	r := newResolver(dnswatch.Config{Every: time.Hour}, []*ring.Ring{rg}, zerolog.Nop()) // looks the ring's names up first
	defer r.stop()
	if r.addr("app.test:"+port).sa.Load() == nil {
		b.Fatal("app.test not resolved by newResolver")
	}
	dc := dialCache{r: r, addrs: map[string]*dialAddr{}}
	for name, addr := range map[string]string{"ip": ln.Addr().String(), "name": "app.test:" + port} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				fd, _, err := dc.connect(addr)
				if err != nil {
					b.Fatal(err)
				}
				sysClose(fd)
			}
		})
	}
}
