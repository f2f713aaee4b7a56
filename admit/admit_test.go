package admit

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

var (
	t0     = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	client = netip.MustParseAddr("192.0.2.7")
)

// addr4 is the i-th of 2^24 distinct loopback addresses, 127.x.y.z.
func addr4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)})
}

// TestRateMatchesLimiter holds the bucket to golang.org/x/time/rate's Limiter: the same
// answers on the same clock, and a Retry-After after which the Limiter has a token again
// (and a second earlier, none yet).
func TestRateMatchesLimiter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		rate  float64
		burst int
	}{{1, 1}, {10, 20}, {0.1, 3}, {1000, 5}, {2.5, 1}} {
		tab := New(Config{Rate: c.rate, Burst: c.burst})
		lim := rate.NewLimiter(rate.Limit(c.rate), c.burst)
		now := t0
		allowed := 0
		for i := range 5000 {
			// Mostly bursts of arrivals, sometimes a pause, sometimes a clock a bit behind.
			switch rng.IntN(10) {
			case 0:
				now = now.Add(time.Duration(rng.Float64() * 3 / c.rate * float64(time.Second)))
			case 1:
				now = now.Add(-time.Millisecond)
			default:
				now = now.Add(time.Duration(rng.IntN(int(float64(time.Second)/(c.rate*4)) + 1)))
			}
			_, v := tab.Admit(client, now)
			if want := lim.AllowN(now, 1); v.Allowed() != want {
				t.Fatalf("rate %v burst %d, arrival %d: Admit %v, Limiter.Allow %v", c.rate, c.burst, i, v, want)
			}
			if v.Allowed() {
				allowed++
				continue
			}
			if v.Reason != OverRate {
				t.Fatalf("refused for %v, want rate", v.Reason)
			}
			after := time.Duration(v.RetryAfter) * time.Second
			if lim.TokensAt(now.Add(after)) < 1 || v.RetryAfter > 1 && lim.TokensAt(now.Add(after-time.Second)) >= 1 {
				t.Fatalf("rate %v burst %d: Retry-After %d s, but the Limiter has %.3f tokens then",
					c.rate, c.burst, v.RetryAfter, lim.TokensAt(now.Add(after)))
			}
		}
		if allowed == 0 || allowed == 5000 {
			t.Errorf("rate %v burst %d: %d of 5000 allowed: the schedule tested nothing", c.rate, c.burst, allowed)
		}
	}
}

func TestMaxConns(t *testing.T) {
	tab := New(Config{MaxConns: 2})
	a, v1 := tab.Admit(client, t0)
	b, v2 := tab.Admit(netip.AddrFrom16(client.As16()), t0) // the v4-mapped form is the same client
	_, v3 := tab.Admit(client, t0)
	if !v1.Allowed() || !v2.Allowed() || v3.Reason != OverConns || v3.RetryAfter != 1 {
		t.Fatalf("three connections with MaxConns 2: %v %v %v, want allowed, allowed, conns", v1, v2, v3)
	}
	if _, v := tab.Admit(addr4(1), t0); !v.Allowed() {
		t.Fatalf("another address refused: %v", v)
	}
	tab.Release(a)
	c, v4 := tab.Admit(client, t0)
	if !v4.Allowed() {
		t.Fatalf("after one close: %v, want allowed", v4)
	}
	tab.Release(b)
	tab.Release(c)
	tab.Release(Ticket{}) // a refusal's ticket holds nothing
	for range 2 {
		if _, v := tab.Admit(client, t0); !v.Allowed() {
			t.Fatalf("after every close: %v, want allowed", v)
		}
	}
}

// TestHold: a connection moved in from another process counts against its address's limit
// whatever the limit says, and takes no token.
func TestHold(t *testing.T) {
	tab := New(Config{MaxConns: 1, Rate: 1, Burst: 1})
	a, b := tab.Hold(client), tab.Hold(client)
	if !a.Held() || !b.Held() {
		t.Fatal("Hold took no connection of the address")
	}
	if _, v := tab.Admit(client, t0); v.Reason != OverConns {
		t.Fatalf("a new connection beside two held: %v, want over conns", v)
	}
	tab.Release(a)
	tab.Release(b)
	if _, v := tab.Admit(client, t0); !v.Allowed() {
		t.Fatalf("after both closed: %v, want allowed (Hold took no token)", v)
	}
	if tk := New(Config{Rate: 1, Burst: 1}).Hold(client); tk.Held() {
		t.Error("without MaxConns, Hold held a connection")
	}
}

func TestMaxConnsBeforeRate(t *testing.T) {
	tab := New(Config{MaxConns: 1, Rate: 1, Burst: 2})
	tk, _ := tab.Admit(client, t0)
	if _, v := tab.Admit(client, t0); v.Reason != OverConns {
		t.Fatalf("second connection: %v, want conns", v)
	}
	tab.Release(tk)
	// The refusal for conns took no token: the burst's second is still there.
	if _, v := tab.Admit(client, t0); !v.Allowed() {
		t.Fatalf("after the close: %v, want allowed", v)
	}
}

func TestNilTable(t *testing.T) {
	tab := New(Config{MaxEntries: 10})
	if tab != nil {
		t.Fatal("New with no limit is not nil")
	}
	tk, v := tab.Admit(client, t0)
	tab.Release(tk)
	if !v.Allowed() || tab.Len() != 0 || tab.Untracked() != 0 {
		t.Fatalf("nil table: %v, len %d", v, tab.Len())
	}
}

// TestFloodBound: 100,000 distinct addresses cannot grow the table past its bound, whether
// their connections close at once or stay open, and an address at its limit stays limited
// while the flood goes by.
func TestFloodBound(t *testing.T) {
	const flood = 100_000
	tab := New(Config{MaxConns: 1, Rate: 1, Burst: 1, MaxEntries: 4096})
	if tab.Bound() != 4096 {
		t.Fatalf("Bound %d, want 4096", tab.Bound())
	}
	limited := netip.MustParseAddr("2001:db8::1")
	held, v := tab.Admit(limited, t0)
	if !v.Allowed() {
		t.Fatal(v)
	}
	now := t0
	for i := range flood {
		now = now.Add(time.Microsecond)
		tk, v := tab.Admit(addr4(i), now)
		if !v.Allowed() {
			t.Fatalf("address %d of the flood refused: %v", i, v)
		}
		tab.Release(tk)
		if i%1000 == 0 && tab.Len() > tab.Bound() {
			t.Fatalf("after %d addresses the table holds %d, over its bound %d", i+1, tab.Len(), tab.Bound())
		}
	}
	if n := tab.Len(); n > tab.Bound() || n < tab.Bound()/2 {
		t.Fatalf("after the flood the table holds %d, want at most %d (and most of it used)", n, tab.Bound())
	}
	if _, v := tab.Admit(limited, now); v.Reason != OverConns {
		t.Fatalf("the address holding a connection, after the flood: %v, want conns", v)
	}
	tab.Release(held)

	// Connections that stay open: no slot is freed, so the rest go untracked, not stored.
	tickets := make([]Ticket, 0, flood)
	for i := range flood {
		tk, _ := tab.Admit(addr4(flood+i), now)
		tickets = append(tickets, tk)
	}
	if n := tab.Len(); n > tab.Bound() {
		t.Fatalf("with %d open connections the table holds %d, over its bound %d", flood, n, tab.Bound())
	}
	if u := tab.Untracked(); u < flood-uint64(tab.Bound()) {
		t.Fatalf("untracked %d, want at least %d", u, flood-tab.Bound())
	}
	for _, tk := range tickets {
		tab.Release(tk)
	}
	for i := range tab.shards {
		for _, e := range tab.shards[i].entries {
			if e.active != 0 {
				t.Fatalf("an entry still counts %d connections after every close", e.active)
			}
		}
	}
}

// TestConcurrent: loops admitting and releasing at once leave every count at zero, and a
// shared address never holds more than MaxConns.
func TestConcurrent(t *testing.T) {
	const loops, perLoop, maxConns = 4, 20_000, 3
	tab := New(Config{MaxConns: maxConns, Rate: 1e6, Burst: 1000, MaxEntries: 64})
	shared := netip.MustParseAddr("198.51.100.9")
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for l := range loops {
		wg.Go(func() {
			var mine []Ticket
			for i := range perLoop {
				ip := shared
				if i%2 == 1 {
					ip = addr4(l*perLoop + i%500)
				}
				tk, v := tab.Admit(ip, time.Now())
				if v.Allowed() && ip == shared {
					mu.Lock()
					open++
					if open > maxConns {
						t.Errorf("%d connections open for one address, limit %d", open, maxConns)
					}
					mu.Unlock()
					mu.Lock()
					open--
					mu.Unlock()
				}
				mine = append(mine, tk)
				if len(mine) == 4 {
					for _, tk := range mine {
						tab.Release(tk)
					}
					mine = mine[:0]
				}
			}
			for _, tk := range mine {
				tab.Release(tk)
			}
		})
	}
	wg.Wait()
	if tab.Len() > tab.Bound() {
		t.Fatalf("table holds %d, over %d", tab.Len(), tab.Bound())
	}
	for i := range tab.shards {
		for _, e := range tab.shards[i].entries {
			if e.active != 0 {
				t.Fatalf("an entry counts %d connections after every close", e.active)
			}
		}
	}
}

func TestAppendTooMany(t *testing.T) {
	for _, ra := range []int{0, 1, 37, 86400} {
		b := AppendTooMany(nil, ra)
		if len(b) > TooManyLen {
			t.Fatalf("answer of %d bytes, over TooManyLen %d", len(b), TooManyLen)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
		if err != nil {
			t.Fatalf("net/http cannot read %q: %v", b, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		want := strconv.Itoa(max(1, ra))
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != want || !resp.Close || string(body) != tooManyBody {
			t.Errorf("answer %q: status %d, Retry-After %q (want %s), close %v", b, resp.StatusCode, resp.Header.Get("Retry-After"), want, resp.Close)
		}
	}
	buf := make([]byte, 0, TooManyLen)
	if n := testing.AllocsPerRun(100, func() { AppendTooMany(buf[:0], 120) }); n != 0 {
		t.Errorf("AppendTooMany: %v allocs, want 0", n)
	}
}

func TestKnownAddressZeroAllocs(t *testing.T) {
	tab := New(Config{MaxConns: 10, Rate: 1e9, Burst: 1 << 20})
	tk, _ := tab.Admit(client, t0)
	tab.Release(tk)
	now := t0
	if n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Millisecond)
		tk, _ := tab.Admit(client, now)
		tab.Release(tk)
	}); n != 0 {
		t.Errorf("Admit and Release of a known address: %v allocs, want 0", n)
	}
}

// BenchmarkAdmitRelease: the loops' cost per connection, every goroutine on its own known
// addresses (distinct), or all on one (shared: one shard's lock).
func BenchmarkAdmitRelease(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"conns+rate", Config{MaxConns: 100, Rate: 1e9, Burst: 1 << 40}},
		{"rate", Config{Rate: 1e9, Burst: 1 << 40}},
	} {
		for _, shared := range []bool{false, true} {
			name := bc.name + "/distinct"
			if shared {
				name = bc.name + "/shared"
			}
			b.Run(name, func(b *testing.B) {
				tab := New(bc.cfg)
				var next sync.Mutex
				g := 0
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					next.Lock()
					base := g * 1000
					g++
					next.Unlock()
					i := 0
					for pb.Next() {
						ip := client
						if !shared {
							ip = addr4(base + i%1000)
						}
						i++
						tk, v := tab.Admit(ip, t0)
						if !v.Allowed() {
							b.Fatal(v)
						}
						tab.Release(tk)
					}
				})
			})
		}
	}
}

// BenchmarkAdmitNewAddress: a flood of addresses never seen, each taking the slot of the
// one idle longest in a full table.
func BenchmarkAdmitNewAddress(b *testing.B) {
	tab := New(Config{MaxConns: 10, Rate: 10, Burst: 10, MaxEntries: 4096})
	for i := range tab.Bound() * 2 {
		tk, _ := tab.Admit(addr4(i), t0)
		tab.Release(tk)
	}
	i := tab.Bound() * 2
	b.ReportAllocs()
	for b.Loop() {
		i++
		tk, _ := tab.Admit(addr4(i), t0)
		tab.Release(tk)
	}
	if tab.Len() > tab.Bound() {
		b.Fatalf("table holds %d, over %d", tab.Len(), tab.Bound())
	}
}

// TestIPv6ClientsKeyedOnTheirPrefix: two addresses of one /64 share a limit, addresses of
// different /64s do not; with IPv6Prefix 128 every address is its own client, and IPv4
// (plain or v4-mapped) is keyed whole whatever the prefix.
func TestIPv6ClientsKeyedOnTheirPrefix(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1:2::1")
	sameNet := netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:ffff")
	otherNet := netip.MustParseAddr("2001:db8:1:3::1")
	for _, c := range []struct {
		prefix                  int
		sameShares, otherShares bool
	}{
		{0, true, false}, // the default, /64
		{64, true, false},
		{48, true, true},
		{63, true, true}, // 2001:db8:1:2:: and 2001:db8:1:3:: differ in the 64th bit only
		{128, false, false},
	} {
		tab := New(Config{MaxConns: 1, IPv6Prefix: c.prefix})
		first, v := tab.Admit(a, t0)
		if !v.Allowed() {
			t.Fatalf("/%d: the first connection refused: %v", c.prefix, v)
		}
		if _, v := tab.Admit(sameNet, t0); v.Allowed() == c.sameShares {
			t.Errorf("/%d: %v of the same /64: %v, want shared limit %v", c.prefix, sameNet, v, c.sameShares)
		}
		if _, v := tab.Admit(otherNet, t0); v.Allowed() == c.otherShares {
			t.Errorf("/%d: %v: %v, want shared limit %v", c.prefix, otherNet, v, c.otherShares)
		}
		tab.Release(first)
	}
	// Release by address: the key is the prefix, so another address of the /64 frees it.
	tab := New(Config{MaxConns: 1})
	tab.Admit(a, t0)
	tab.ReleaseAddr(sameNet)
	if _, v := tab.Admit(a, t0); !v.Allowed() {
		t.Errorf("after ReleaseAddr of the same /64: %v, want allowed", v)
	}
	// IPv4 keeps its whole address, mapped or not, under any IPv6 prefix.
	tab = New(Config{MaxConns: 1, IPv6Prefix: 8})
	tab.Admit(addr4(1), t0)
	if _, v := tab.Admit(addr4(2), t0); !v.Allowed() {
		t.Errorf("a second IPv4 address with /8 for IPv6: %v, want allowed", v)
	}
	if _, v := tab.Admit(netip.AddrFrom16(addr4(1).As16()), t0); v.Allowed() {
		t.Errorf("the v4-mapped form of a held IPv4 address: allowed, want over its limit")
	}
}
