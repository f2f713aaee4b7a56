package ring

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"
)

// Balance is how a ring chooses among its pickable backends.
type Balance uint8

const (
	// RoundRobin is smooth weighted round robin (nginx's): exact shares by weight.
	RoundRobin Balance = iota
	// LeastConn picks the fewest active connections per unit of weight; ties go round robin.
	// It reads every member's count: O(backends) a pick.
	LeastConn
	// P2C draws two backends at random by weight and picks the one with fewer active
	// connections per unit of weight ("power of two choices"). O(log backends) a pick.
	P2C
	// Source hashes the client address (CursorFor) with rendezvous hashing: a client keeps
	// its backend, and removing one of N backends moves only that backend's clients, about
	// 1/N. Weighted. O(backends) a pick.
	Source
	// Random draws a backend at random by weight. O(log backends) a pick.
	Random
)

var balanceNames = [...]string{"roundrobin", "leastconn", "p2c", "source", "random"}

// BalanceNames lists the names ParseBalance accepts, for flag help and errors.
const BalanceNames = "roundrobin, leastconn, p2c, source or random"

// String returns the name ParseBalance accepts.
func (b Balance) String() string {
	if int(b) < len(balanceNames) {
		return balanceNames[b]
	}
	return fmt.Sprintf("Balance(%d)", uint8(b))
}

// ParseBalance returns the Balance of this name (see BalanceNames), case-insensitive.
func ParseBalance(s string) (Balance, error) {
	for i, n := range balanceNames {
		if strings.EqualFold(s, n) {
			return Balance(i), nil
		}
	}
	return 0, fmt.Errorf("unknown balance %q: want %s", s, BalanceNames)
}

// Config sets how a ring balances. The zero Config is round robin without slow start.
type Config struct {
	Balance Balance
	// SlowStart, when above 0, ramps the weight of a backend that comes up (SetUp after
	// being sick, SetState Up after Down or Draining) or is added, linearly from 10% of its
	// weight to all of it over this long. Ramp must be called to move it along.
	SlowStart time.Duration
}

// NewWith returns a ring of the given backends that balances as cfg says; see New.
func NewWith(cfg Config, backends ...Backend) (*Ring, error) {
	if int(cfg.Balance) >= len(balanceNames) {
		return nil, fmt.Errorf("ring: unknown balance %d", cfg.Balance)
	}
	r, err := New(backends...)
	if err != nil {
		return nil, err
	}
	r.cfg.Store(&cfg)
	return r, nil
}

// Config returns the ring's configuration.
func (r *Ring) Config() Config {
	if c := r.cfg.Load(); c != nil {
		return *c
	}
	return Config{}
}

// SetConfig makes cfg the ring's configuration for the picks that follow, as after a reload
// that changed a pool's balancing: the backends keep their state and active counts. Turning
// slow start off puts every ramping backend at full weight.
func (r *Ring) SetConfig(cfg Config) error {
	if int(cfg.Balance) >= len(balanceNames) {
		return fmt.Errorf("ring: unknown balance %d", cfg.Balance)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.Store(&cfg)
	if cfg.SlowStart > 0 {
		return nil
	}
	s := r.snap.Load()
	changed := false
	for _, m := range s.members {
		if m.rampFrom != 0 {
			m.rampFrom, m.ramp, changed = 0, rampFull, true
		}
	}
	if changed {
		r.snap.Store(newSnapshot(s.members, s.backends))
	}
	return nil
}

// CursorFor is Cursor for a connection from client: Source hashes its address (an IPv4
// address and its IPv4-mapped IPv6 form hash alike); other balances ignore it.
func (r *Ring) CursorFor(client netip.Addr) Cursor {
	c := Cursor{r: r, s: r.snap.Load(), first: -1}
	if r.Config().Balance == Source {
		a := client.As16()
		c.key = mix64(binary.LittleEndian.Uint64(a[:8])) ^ binary.LittleEndian.Uint64(a[8:])
	}
	return c
}

// Full weight in the units of snapshot.weights: a backend at the end of its ramp.
const (
	rampFull  = 1000
	rampStart = rampFull / 10
)

// Ramp moves slow start along to now: each ramping backend's weight becomes its share of
// the way from 10% to 100%, and a new snapshot is published if any changed. It returns how
// many backends still ramp and the ids of those that reached full weight, for logs. Call it
// often while backends ramp (every SlowStart/20, say); it is cheap when none does.
func (r *Ring) Ramp(now time.Time) (ramping int, done []string) {
	slow := r.Config().SlowStart
	if slow <= 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.snap.Load()
	changed := false
	for _, m := range s.members {
		if m.rampFrom == 0 {
			continue
		}
		elapsed := now.UnixNano() - m.rampFrom
		p := rampStart + int64(rampFull-rampStart)*max(0, elapsed)/int64(slow)
		if p >= rampFull {
			m.rampFrom, m.ramp = 0, rampFull
			done = append(done, m.id)
			changed = true
			continue
		}
		ramping++
		if int(p) != m.ramp {
			m.ramp, changed = int(p), true
		}
	}
	if changed {
		r.snap.Store(newSnapshot(s.members, s.backends))
	}
	return ramping, done
}

// startRamp puts m at the start of its ramp and publishes that; the caller holds r.mu and
// makes m pickable after, so no pick sees it at full weight meanwhile.
func (r *Ring) startRamp(m *member, now time.Time) {
	m.rampFrom, m.ramp = now.UnixNano(), rampStart
	s := r.snap.Load()
	r.snap.Store(newSnapshot(s.members, s.backends))
}

// pickFor returns the index of the member to try first, or false when none is pickable.
func (r *Ring) pickFor(s *snapshot, key uint64) (int, bool) {
	switch r.Config().Balance {
	case LeastConn:
		return r.leastConn(s)
	case P2C:
		return p2c(s)
	case Source:
		return source(s, key)
	case Random:
		return random(s)
	}
	return r.pick(s)
}

// lighter reports whether member i carries fewer active connections per unit of weight than
// member j; a and b are their active counts.
func lighter(s *snapshot, i int, a int64, j int, b int64) bool {
	return a*int64(s.weights[j]) < b*int64(s.weights[i])
}

// leastConn scans every member from a rotating start, so ties go round robin.
func (r *Ring) leastConn(s *snapshot) (int, bool) {
	n := len(s.members)
	if n == 0 {
		return 0, false
	}
	start := int(r.next.Add(1) % uint64(n))
	best, bestActive := -1, int64(0)
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		m := s.members[i]
		if !m.pickable() {
			continue
		}
		if a := m.active.Load(); best < 0 || lighter(s, i, a, best, bestActive) {
			best, bestActive = i, a
		}
	}
	return best, best >= 0
}

// drawTries bounds the weighted draws that may land on unpickable members before random
// and p2c fall back to scanning for a pickable one.
const drawTries = 8

// draw returns a member drawn at random in proportion to its weight, pickable at the time.
func draw(s *snapshot) (int, bool) {
	n := len(s.members)
	if n == 0 || s.total == 0 {
		return 0, false
	}
	for range drawTries {
		u := rand.Uint64N(s.total)
		lo, hi := 0, n-1 // the first i with cum[i] > u
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if s.cum[mid] > u {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		if s.members[lo].pickable() {
			return lo, true
		}
	}
	// Most are unpickable: the next pickable one after a random start.
	start := rand.IntN(n)
	for k := range n {
		if i := (start + k) % n; s.members[i].pickable() {
			return i, true
		}
	}
	return 0, false
}

func random(s *snapshot) (int, bool) { return draw(s) }

// p2c draws two members by weight and returns the lighter; on a tie, the first drawn, so
// an idle ring shares by weight.
func p2c(s *snapshot) (int, bool) {
	i, ok := draw(s)
	if !ok {
		return 0, false
	}
	j, _ := draw(s)
	if j == i {
		return i, true
	}
	if a, b := s.members[i].active.Load(), s.members[j].active.Load(); lighter(s, j, b, i, a) {
		return j, true
	}
	return i, true
}

// source returns the pickable member of highest rendezvous score for key: a hash of key and
// the member's id, weighted as -w/ln(u) (u the hash in (0,1)) when weights differ.
func source(s *snapshot, key uint64) (int, bool) {
	best, bestScore, bestHash := -1, 0.0, uint64(0)
	for i, m := range s.members {
		if !m.pickable() {
			continue
		}
		h := mix64(key ^ m.seed)
		if s.uniform {
			if best < 0 || h > bestHash {
				best, bestHash = i, h
			}
			continue
		}
		u := (float64(h>>11) + 0.5) / (1 << 53)
		if score := -float64(s.weights[i]) / math.Log(u); best < 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best, best >= 0
}

// mix64 is splitmix64's finaliser: every input bit moves every output bit. Fixed, so every
// replica of lb maps a client to the same backend.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// idSeed is the member's fixed hash for Source: FNV-1a of its id, mixed.
func idSeed(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return mix64(h)
}
