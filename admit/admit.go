// Package admit decides whether a client address may open one more connection: at most
// MaxConns open at once per address, and new connections at Rate per second with bursts
// of Burst (a token bucket per address).
//
// It is called from lb's event loops, several goroutines at once. The table is split into
// shards, each behind its own mutex held for a map lookup and a few arithmetic steps, never
// across a system call. It holds at most MaxEntries addresses: when a shard is full, the
// address idle longest (no open connection) gives its slot to the new one, so a flood of
// distinct addresses cannot grow it. A known address costs no allocation.
package admit

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets the limits; a zero field turns its limit off.
type Config struct {
	// MaxConns is the connections one address may hold open at once (0: no limit).
	MaxConns int
	// Rate is the new connections one address may open per second, on average (0: no limit).
	Rate float64
	// Burst is how many new connections an address may open at once before Rate paces it;
	// 1 or more when Rate is set.
	Burst int
	// MaxEntries bounds the addresses the table tracks (0: DefaultMaxEntries). Size it above
	// the connections lb holds (--max-conns), so that an address with an open connection is
	// never the only kind left in a full shard.
	MaxEntries int
	// IPv6Prefix is how many leading bits of an IPv6 client's address are its key, 1 to 128
	// (0: DefaultIPv6Prefix): the addresses of one /64, which a client can rotate through at
	// will, share their limits. IPv4 addresses, and IPv4-mapped IPv6 ones, are keyed whole.
	IPv6Prefix int
}

// DefaultIPv6Prefix is Config.IPv6Prefix when 0: a /64, the smallest network usually
// routed to one customer.
const DefaultIPv6Prefix = 64

// DefaultMaxEntries is the table's bound when Config.MaxEntries is 0.
const DefaultMaxEntries = 1 << 16

// Reason says why a connection was refused, or that it was not.
type Reason uint8

const (
	// Allowed: the connection may go on.
	Allowed Reason = iota
	// OverRate: the address opened connections faster than Rate and Burst allow.
	OverRate
	// OverConns: the address already holds MaxConns connections.
	OverConns
)

func (r Reason) String() string {
	switch r {
	case Allowed:
		return "allowed"
	case OverRate:
		return "rate"
	case OverConns:
		return "conns"
	}
	return "unknown"
}

// Verdict is Admit's answer.
type Verdict struct {
	Reason Reason
	// RetryAfter is, when refused, the seconds after which a new connection would be
	// admitted (at least 1): when the bucket has a token again for OverRate, and 1 for
	// OverConns, which waits for a close no one can predict.
	RetryAfter int
}

// Allowed reports whether the connection may go on.
func (v Verdict) Allowed() bool { return v.Reason == Allowed }

// Ticket is an admitted connection's hold on its address's open-connection count. Keep it
// with the connection and pass it to Release when the connection closes. The zero Ticket
// (from a refusal, from a table without MaxConns, or from a nil Table) holds nothing.
type Ticket struct {
	key  [16]byte
	held bool
}

// Table is the per-address state. A nil *Table admits everything. Its methods are safe for
// concurrent use.
type Table struct {
	cfg       Config
	perShard  int
	seed      uint64
	shards    [shardCount]shard
	untracked atomic.Uint64
}

// shardCount spreads the loops' calls over this many locks.
const (
	shardBits  = 5
	shardCount = 1 << shardBits
)

type shard struct {
	mu      sync.Mutex
	index   map[[16]byte]int32
	entries []entry
	// idleHead and idleTail link the entries with no open connection, most recently used
	// first: the tail is the one a new address evicts.
	idleHead, idleTail int32
	_                  [64]byte // keep neighbouring shards' locks off this cache line
}

type entry struct {
	key        [16]byte
	tokens     float64   // the bucket as of last
	last       time.Time // when tokens was last taken from
	active     int32     // open connections
	prev, next int32     // in the idle list, when active == 0; none is -1
}

const none = -1

// New returns a table for cfg, or nil when cfg sets no limit. It panics on a negative
// field or on Rate without Burst: callers validate flags first.
func New(cfg Config) *Table {
	if cfg.MaxConns < 0 || cfg.Rate < 0 || cfg.Burst < 0 || cfg.MaxEntries < 0 || cfg.Rate > 0 && cfg.Burst == 0 ||
		cfg.IPv6Prefix < 0 || cfg.IPv6Prefix > 128 {
		panic("admit: negative limit, Rate without Burst, or an IPv6 prefix outside 0..128")
	}
	if cfg.MaxConns == 0 && cfg.Rate == 0 {
		return nil
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.IPv6Prefix == 0 {
		cfg.IPv6Prefix = DefaultIPv6Prefix
	}
	t := &Table{cfg: cfg, perShard: max(1, (cfg.MaxEntries+shardCount-1)/shardCount), seed: rand.Uint64()}
	for i := range t.shards {
		t.shards[i].index = make(map[[16]byte]int32)
		t.shards[i].idleHead, t.shards[i].idleTail = none, none
	}
	return t
}

// Bound is the most addresses the table ever holds: MaxEntries rounded up to its shards.
func (t *Table) Bound() int { return t.perShard * shardCount }

// keyOf is the key of ip's limits as 16 bytes, without its zone: an IPv4 address (or a
// v4-mapped IPv6 one) whole, an IPv6 address cut to its first cfg.IPv6Prefix bits.
func (t *Table) keyOf(ip netip.Addr) [16]byte {
	ip = ip.Unmap()
	k := ip.As16()
	if ip.Is4() {
		return k
	}
	bits := t.cfg.IPv6Prefix
	for i := range k {
		switch {
		case bits >= 8:
			bits -= 8
		case bits > 0:
			k[i] &= ^byte(0xff >> bits)
			bits = 0
		default:
			k[i] = 0
		}
	}
	return k
}

func (t *Table) shardOf(k *[16]byte) *shard {
	// Multiplying carries every input bit into the top bits, which pick the shard: IPv4
	// addresses differ only in k[12:16], IPv6 clients often only in k[8:16].
	h := (binary.LittleEndian.Uint64(k[8:]) ^ t.seed) * 0x9e3779b97f4a7c15
	h = (h ^ h>>32 ^ binary.LittleEndian.Uint64(k[:8])) * 0xc2b2ae3d27d4eb4f
	return &t.shards[h>>(64-shardBits)]
}

// Admit decides on a new connection from ip at now (a clock lb already read; it need not be
// time.Now exactly, but must not run backwards by much). An allowed connection takes a
// token and, with MaxConns, one of ip's connections: Release its Ticket at close. When the
// table has no slot for a new address (every entry of its shard has an open connection),
// the connection is allowed untracked and counted (Untracked).
func (t *Table) Admit(ip netip.Addr, now time.Time) (Ticket, Verdict) {
	if t == nil {
		return Ticket{}, Verdict{}
	}
	k := t.keyOf(ip)
	s := t.shardOf(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := t.entryOf(s, k, now)
	if i == none {
		return Ticket{}, Verdict{}
	}
	e := &s.entries[i]
	if t.cfg.MaxConns > 0 && int(e.active) >= t.cfg.MaxConns {
		return Ticket{}, Verdict{Reason: OverConns, RetryAfter: 1}
	}
	if t.cfg.Rate > 0 {
		// The bucket of golang.org/x/time/rate's Limiter.AllowN (the tests hold it to
		// that), kept in the entry under the shard's lock instead of a Limiter of its own:
		// no second mutex, and a slot is reused without allocating a new Limiter.
		last := e.last
		if now.Before(last) {
			last = now
		}
		tokens := min(float64(t.cfg.Burst), e.tokens+now.Sub(last).Seconds()*t.cfg.Rate)
		if tokens < 1 {
			s.touch(i)
			wait := (1-tokens)/t.cfg.Rate + e.last.Sub(last).Seconds() // the bucket fills from e.last
			return Ticket{}, Verdict{Reason: OverRate, RetryAfter: retryAfter(wait)}
		}
		e.tokens, e.last = tokens-1, now
	}
	if t.cfg.MaxConns == 0 {
		s.touch(i)
		return Ticket{}, Verdict{}
	}
	return s.hold(i, k), Verdict{}
}

// Hold counts a connection of ip that is open already, admitted by another process (an
// upgrade moved it here): with MaxConns, it takes one of ip's connections whatever the limit
// says, and no token. Release its Ticket at close.
func (t *Table) Hold(ip netip.Addr) Ticket {
	if t == nil || t.cfg.MaxConns == 0 {
		return Ticket{}
	}
	k := t.keyOf(ip)
	s := t.shardOf(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := t.entryOf(s, k, time.Time{})
	if i == none {
		return Ticket{}
	}
	return s.hold(i, k)
}

// entryOf is the entry of key k in s (whose lock the caller holds), added with a full bucket
// as of now if k has none; none, counted as untracked, when s has no slot for it.
func (t *Table) entryOf(s *shard, k [16]byte, now time.Time) int32 {
	i, ok := s.index[k]
	if !ok {
		if i = s.add(k, t.perShard); i == none {
			t.untracked.Add(1)
			return none
		}
		s.entries[i].tokens, s.entries[i].last = float64(t.cfg.Burst), now
	}
	return i
}

// hold takes one of entry i's connections: an entry with connections is never evicted.
func (s *shard) hold(i int32, k [16]byte) Ticket {
	if s.entries[i].active == 0 {
		s.unlink(i)
	}
	s.entries[i].active++
	return Ticket{key: k, held: true}
}

// retryAfter is wait seconds rounded up to whole ones, at least 1.
func retryAfter(wait float64) int {
	s := math.Ceil(wait)
	if s < 1 {
		return 1
	}
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(s)
}

// Held reports whether tk holds a connection of its address: Release (or ReleaseAddr) must
// give it back.
func (tk Ticket) Held() bool { return tk.held }

// ReleaseAddr is Release of a held ticket of ip, for a caller that keeps the address rather
// than the ticket.
func (t *Table) ReleaseAddr(ip netip.Addr) {
	if t != nil {
		t.Release(Ticket{key: t.keyOf(ip), held: true})
	}
}

// Release gives back the connection tk holds, once, when it closes.
func (t *Table) Release(tk Ticket) {
	if t == nil || !tk.held {
		return
	}
	s := t.shardOf(&tk.key)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[tk.key]
	if !ok || s.entries[i].active == 0 {
		return // cannot happen: an entry with connections is never evicted
	}
	s.entries[i].active--
	if s.entries[i].active == 0 {
		s.pushFront(i)
	}
}

// Len is the number of addresses the table holds now, at most Bound.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}

// Untracked counts connections admitted without an entry because their shard was full of
// addresses with open connections (see Config.MaxEntries).
func (t *Table) Untracked() uint64 {
	if t == nil {
		return 0
	}
	return t.untracked.Load()
}

// add gives k an entry, evicting the idle list's tail when the shard is full; it returns
// none when the shard is full and nothing is idle. The entry starts idle, at the front.
func (s *shard) add(k [16]byte, limit int) int32 {
	var i int32
	switch {
	case len(s.entries) < limit:
		s.entries = append(s.entries, entry{})
		i = int32(len(s.entries) - 1)
	case s.idleTail != none:
		i = s.idleTail
		s.unlink(i)
		delete(s.index, s.entries[i].key)
	default:
		return none
	}
	s.entries[i] = entry{key: k}
	s.index[k] = i
	s.pushFront(i)
	return i
}

// touch moves an idle entry to the front of the idle list.
func (s *shard) touch(i int32) {
	if s.entries[i].active == 0 && s.idleHead != i {
		s.unlink(i)
		s.pushFront(i)
	}
}

func (s *shard) pushFront(i int32) {
	e := &s.entries[i]
	e.prev, e.next = none, s.idleHead
	if s.idleHead != none {
		s.entries[s.idleHead].prev = i
	} else {
		s.idleTail = i
	}
	s.idleHead = i
}

func (s *shard) unlink(i int32) {
	e := &s.entries[i]
	if e.prev != none {
		s.entries[e.prev].next = e.next
	} else {
		s.idleHead = e.next
	}
	if e.next != none {
		s.entries[e.next].prev = e.prev
	} else {
		s.idleTail = e.prev
	}
	e.prev, e.next = none, none
}
