// Package ring chooses backends: by default a circular ring walked in smooth weighted
// round-robin order, skipping the backends that cannot take connections; NewWith chooses
// another Balance (least connections, power of two choices, source hash, random) and slow
// start.
//
// Picks are lock-free and allocation-free: readers load an immutable snapshot through an
// atomic pointer and take a slot from one shared atomic counter. Writers (Add, Remove,
// SetWeight) build a whole new snapshot and swap it in, so a reader never sees a
// half-updated ring. A backend's health (SetUp), its state (SetState) and its count of
// active connections (Cursor.Start, Active.End) live on its member, outside the snapshot,
// so they survive changes to the others.
package ring

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"
)

// Backend is one server the ring can pick. Its ID and Addr are each unique within a ring.
type Backend struct {
	ID     string // stable, opaque id (cookie value later); unique in a ring
	Addr   string // host:port to dial, unique in a ring
	Weight int    // share of picks; < 1 counts as 1

	// MaxConn, above 0, is how many active connections (Cursor.Start to Active.End) the
	// backend takes: picks skip it at that count. 0: no limit. See SetMaxConn.
	MaxConn int

	// Settings the ring keeps for its callers and does not act on.
	Proxy string // PROXY protocol header lb sends it: "" (none), "v1" or "v2"
	Check string // health check: "" (lb's default), "tcp", or "http:" and a path, e.g. "http:/health"
}

// State is what an operator (reload, admin API) wants of a backend, apart from its health.
type State uint8

const (
	// Up backends take new connections while healthy: the state of every new backend.
	Up State = iota
	// Down backends take no connection, new or sticky; health still probes them.
	Down
	// Draining backends take no new picks; their open connections finish, sticky clients
	// (Lookup) still reach them, as in HAProxy's drain, and they stay listed.
	Draining
)

// String returns up, down or draining.
func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	case Draining:
		return "draining"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Status is a backend as Snapshot reports it. Backend.Weight is the configured weight (the
// last SetWeight); EffectiveWeight is the one picks use now (lower while slow start ramps).
type Status struct {
	Backend
	Up              bool  // healthy: the last SetUp said so
	State           State // the last SetState; Up by default
	EffectiveWeight float64
	Active          int64 // connections counted by Start and not yet ended
}

// ErrDuplicate is returned (wrapped) by New and Add when a backend's ID or Addr is already
// in the ring; the ring is then unchanged.
var ErrDuplicate = errors.New("duplicate backend")

// member is one backend of the ring. The same *member is shared by every snapshot that
// contains it, so its health, state and active count are kept when others come and go.
type member struct {
	id   string
	addr string
	// flags is 0 exactly when picks may return the member: flagSick (health) and the State
	// shifted left by one. One load decides, and a writer changes both parts atomically.
	flags atomic.Uint32
	// maxConn, above 0, is the active count at which picks skip the member (Backend.MaxConn).
	maxConn atomic.Int64
	seed    uint64 // idSeed(id), for Source
	weight  int    // configured weight; written under Ring.mu only
	// Slow start, under Ring.mu: ramp is the share of weight in effect, in 1/rampFull,
	// and rampFrom the UnixNano its ramp began (0: not ramping).
	ramp     int
	rampFrom int64

	// active is written by every connection start and end, from every loop: on a cache
	// line of its own, so those writes do not slow the reads of flags by picks.
	_      cpu.CacheLinePad
	active atomic.Int64
	_      cpu.CacheLinePad
}

const flagSick = 1

// pickable reports whether picks may return m now: healthy, Up, and below its maxConn.
// The count is read only for members with a limit.
func (m *member) pickable() bool {
	if m.flags.Load() != 0 {
		return false
	}
	limit := m.maxConn.Load()
	return limit <= 0 || m.active.Load() < limit
}

// full reports whether m would be pickable but for its maxConn.
func (m *member) full() bool {
	limit := m.maxConn.Load()
	return m.flags.Load() == 0 && limit > 0 && m.active.Load() >= limit
}

// snapshot is an immutable view of the ring: never modified once published.
type snapshot struct {
	members  []*member        // ring order: the order of New and Add
	backends []Backend        // members[i] as picks return it, with its configured weight
	weights  []int            // in effect: weight × ramp, in 1/rampFull of a weight
	schedule []int32          // indexes into members, one per slot; see smoothSchedule
	byID     map[string]int32 // index in members, for Lookup and SetUp
	cum      []uint64         // running sums of weights, for weighted draws
	total    uint64           // the sum of weights
	uniform  bool             // every weight is the same
}

// Ring is a circular list of backends. All methods are safe for concurrent use; picks
// (Next, Cursor), Lookup, SetUp, SetState and the active counts never block on writers and
// never allocate. The zero Ring is not usable: call New.
type Ring struct {
	snap atomic.Pointer[snapshot]
	mu   sync.Mutex             // serialises writers; readers never take it
	cfg  atomic.Pointer[Config] // set by NewWith and SetConfig; nil: the zero Config

	// next is written on every pick: padding keeps it off the cache line of snap, which
	// every pick reads, so picks on other CPUs do not keep invalidating each other's snap.
	_    cpu.CacheLinePad
	next atomic.Uint64 // counts schedule slots taken since New; slot = next % len(schedule)
	_    cpu.CacheLinePad
}

// New returns a ring of the given backends, in that order, all up. It fails with
// ErrDuplicate if two share an ID or an Addr, and rejects an empty ID or Addr. A Weight
// below 1 is stored as 1, so Snapshot shows the weight in effect.
func New(backends ...Backend) (*Ring, error) {
	r := &Ring{}
	members := make([]*member, 0, len(backends))
	byID := make(map[string]*member, len(backends))
	byAddr := make(map[string]*member, len(backends))
	for _, b := range backends {
		m, err := newMember(b, byID[b.ID], byAddr[b.Addr])
		if err != nil {
			return nil, err
		}
		members = append(members, m)
		byID[m.id], byAddr[m.addr] = m, m
	}
	r.snap.Store(newSnapshot(members, backends))
	return r, nil
}

// Add appends b to the ring, up (and ramping, with slow start), checked and normalised as
// in New. It fails with
// ErrDuplicate if b's ID or Addr is already in the ring. A backend removed and added again
// is a new member: it starts up, with no active connections, whatever its state before.
func (r *Ring) Add(b Backend) error {
	return r.add(b, true)
}

// AddDown is Add with b down: no pick returns it until SetUp(b.ID, true), as for a backend
// found in DNS that has not been probed yet.
func (r *Ring) AddDown(b Backend) error {
	return r.add(b, false)
}

func (r *Ring) add(b Backend, up bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Load()
	var sameID, sameAddr *member
	for _, m := range old.members {
		if m.addr == b.Addr {
			sameAddr = m
		}
		if m.id == b.ID {
			sameID = m
		}
	}
	m, err := newMember(b, sameID, sameAddr)
	if err != nil {
		return err
	}
	if r.Config().SlowStart > 0 {
		m.rampFrom, m.ramp = time.Now().UnixNano(), rampStart
	}
	if !up {
		m.flags.Store(flagSick) // down until a probe says otherwise: no pick sees it before
	}
	members := make([]*member, len(old.members), len(old.members)+1)
	copy(members, old.members)
	backends := make([]Backend, len(old.backends), len(old.backends)+1)
	copy(backends, old.backends)
	r.snap.Store(newSnapshot(append(members, m), append(backends, b)))
	return nil
}

// Remove takes the backend with this id out of the ring and reports whether it was there.
// Picks already made are not affected, and their Active values still end safely; later picks
// never return it.
func (r *Ring) Remove(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Load()
	gone, ok := old.byID[id]
	if !ok {
		return false
	}
	members := slices.Delete(slices.Clone(old.members), int(gone), int(gone)+1)
	backends := slices.Delete(slices.Clone(old.backends), int(gone), int(gone)+1)
	r.snap.Store(newSnapshot(members, backends))
	return true
}

// SetWeight sets the weight of the backend with this id (below 1 counts as 1) and reports
// whether it is in the ring. Picks made from then on use it; Snapshot shows it.
func (r *Ring) SetWeight(id string, weight int) bool {
	return r.update(id, func(m *member, b *Backend) { m.weight = max(1, weight) })
}

// SetMaxConn sets how many active connections the backend with this id takes at most
// (0: no limit) and reports whether it is in the ring. Picks skip a backend at its limit;
// the limit is soft by the picks under way at once (a pick and its Start are two steps), and
// Lookup (sticky clients) does not apply it.
func (r *Ring) SetMaxConn(id string, n int) bool {
	return r.update(id, func(m *member, b *Backend) {
		m.maxConn.Store(int64(max(0, n)))
		b.MaxConn = max(0, n)
	})
}

// update applies change to the member with this id and to a copy of its Backend, publishes
// a new snapshot with them, and reports whether the id is in the ring.
func (r *Ring) update(id string, change func(*member, *Backend)) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Load()
	i, ok := old.byID[id]
	if !ok {
		return false
	}
	backends := slices.Clone(old.backends)
	change(old.members[i], &backends[i])
	r.snap.Store(newSnapshot(old.members, backends))
	return true
}

// SetUp records the health of the backend with this id and reports whether that changed
// it: false for an unknown id or when it already was so. Of concurrent callers setting the
// same health, exactly one sees true, so callers can log transitions once. A backend is
// picked only while healthy and in state Up; with slow start, one that becomes pickable
// starts its ramp.
func (r *Ring) SetUp(id string, up bool) (changed bool) {
	return r.setFlags(id, func(old uint32) uint32 {
		if up {
			return old &^ flagSick
		}
		return old | flagSick
	})
}

// setFlags applies change to the flags of the member with this id, atomically, and reports
// whether they changed. With slow start, a change that makes it pickable is made under
// r.mu after publishing its ramp, so no pick sees it at full weight first.
func (r *Ring) setFlags(id string, change func(uint32) uint32) bool {
	s := r.snap.Load()
	i, ok := s.byID[id]
	if !ok {
		return false
	}
	m := s.members[i]
	if r.Config().SlowStart > 0 && change(m.flags.Load()) == 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		if old := m.flags.Load(); old != 0 && change(old) == 0 {
			r.startRamp(m, time.Now())
		}
	}
	for {
		old := m.flags.Load()
		nu := change(old)
		if nu == old {
			return false
		}
		if m.flags.CompareAndSwap(old, nu) {
			return true
		}
	}
}

// SetState sets the operator's state of the backend with this id (see State) and reports
// whether that changed it: false for an unknown id or when it already was so. Health is
// kept apart: a Down or Draining backend set Up again is picked only if also healthy.
func (r *Ring) SetState(id string, st State) (changed bool) {
	return r.setFlags(id, func(old uint32) uint32 { return old&flagSick | uint32(st)<<1 })
}

// Next returns the next up backend in the rotation, or false when none is up.
//
// With every backend up, each call takes exactly one slot of the schedule, so over any run
// of calls (concurrent or not) each backend gets its weight's share exactly, up to the one
// cycle in progress. Slots of down backends are skipped and count as taken, so the up ones
// keep sharing in proportion to their weights.
func (r *Ring) Next() (Backend, bool) {
	s := r.snap.Load()
	i, ok := r.pickFor(s, 0)
	if !ok {
		return Backend{}, false
	}
	return s.backends[i], true
}

// Lookup returns the backend with this id, whether it may take a sticky client now
// (healthy, and Up or Draining), and whether it is in the ring. It does not allocate.
func (r *Ring) Lookup(id string) (b Backend, up bool, ok bool) {
	s := r.snap.Load()
	i, ok := s.byID[id]
	if !ok {
		return Backend{}, false, false
	}
	f := s.members[i].flags.Load()
	return s.backends[i], f == 0 || f == uint32(Draining)<<1, true
}

// Snapshot returns every backend with its state, in ring order. The slice is the caller's.
func (r *Ring) Snapshot() []Status {
	s := r.snap.Load()
	out := make([]Status, len(s.members))
	for i, m := range s.members {
		f := m.flags.Load()
		out[i] = Status{
			Backend:         s.backends[i],
			Up:              f&flagSick == 0,
			State:           State(f >> 1),
			EffectiveWeight: float64(s.weights[i]) / rampFull,
			Active:          m.active.Load(),
		}
	}
	return out
}

// Len returns the number of backends in the ring, up or down.
func (r *Ring) Len() int {
	return len(r.snap.Load().members)
}

// Cursor returns a cursor for trying backends one after another, for retries. It sees the
// ring as it is now: later Add and Remove do not change what it walks. Under Source, which
// needs the client (CursorFor), it picks as for a client drawn at random, so that traffic
// still spreads.
func (r *Ring) Cursor() Cursor {
	c := Cursor{r: r, s: r.snap.Load(), first: -1}
	if r.Config().Balance == Source {
		c.key = rand.Uint64()
	}
	return c
}

// Cursor walks a ring for one connection's retries. Its first Next gives what Ring.Next
// would (and takes that slot); later ones walk the other members in ring order after the
// first, each at most once, skipping those that cannot be picked at that moment. It is a
// plain value: no allocation, not safe for concurrent use. The zero Cursor yields nothing.
type Cursor struct {
	r      *Ring
	s      *snapshot
	first  int     // member index of the first pick; -1 before it
	walked int     // members after first already considered
	last   *member // what the last Next returned, for Start
	key    uint64  // the client's hash, for Source
}

// Full reports whether, of the backends this cursor walks, one is healthy and Up but at
// its MaxConn now: after Next returned false, waiting for a slot may then help where
// trying again would not. It scans every backend: call it on that failure path only.
func (c *Cursor) Full() bool {
	if c.s == nil {
		return false
	}
	for _, m := range c.s.members {
		if m.full() {
			return true
		}
	}
	return false
}

// Next returns the next backend to try, or false when there is none left.
func (c *Cursor) Next() (Backend, bool) {
	if c.r == nil {
		return Backend{}, false
	}
	if c.first < 0 {
		i, ok := c.r.pickFor(c.s, c.key)
		if !ok {
			c.r = nil // all were down just now: nothing left to try
			return Backend{}, false
		}
		c.first, c.last = i, c.s.members[i]
		return c.s.backends[i], true
	}
	n := len(c.s.members)
	for c.walked < n-1 {
		c.walked++
		i := (c.first + c.walked) % n
		if m := c.s.members[i]; m.pickable() {
			c.last = m
			return c.s.backends[i], true
		}
	}
	return Backend{}, false
}

// Start counts a connection to the backend the last Next returned in its active count,
// until the returned Active's End; with no such backend it returns the zero Active. Call
// it when dialing that backend (after ending the count of a failed dial before it).
// One atomic add; no lookup, no allocation.
func (c *Cursor) Start() Active {
	if c.last == nil {
		return Active{}
	}
	c.last.active.Add(1)
	return Active{m: c.last}
}

// Start counts a connection to the backend with this id (a sticky one, found by Lookup)
// until End; for an id not in the ring it returns the zero Active. One map lookup.
func (r *Ring) Start(id string) Active {
	s := r.snap.Load()
	i, ok := s.byID[id]
	if !ok {
		return Active{}
	}
	m := s.members[i]
	m.active.Add(1)
	return Active{m: m}
}

// Active is one connection counted in its backend's active count. End it exactly once per
// Start, from any goroutine; a removed backend's count ends safely. The zero Active counts
// nothing. It is one pointer: keep it in the connection's state.
type Active struct{ m *member }

// End takes the connection out of the count and clears a, so a second End does nothing.
func (a *Active) End() {
	if a.m != nil {
		a.m.active.Add(-1)
		a.m = nil
	}
}

// claimTries bounds how often pick retries claiming a run of down slots when other callers
// keep moving the counter; after that it answers unclaimed rather than spin.
const claimTries = 4

// pick returns the index in s.members of the next up member, or false when none is up.
//
// The simple "try n, skip unavailable" loop gives a down member's share to whoever follows
// it in the schedule (A,B,C with B down gives A:C = 1:2). Instead, a caller that lands on a
// down slot claims the whole run of down slots up to the next up one, by moving the counter
// past it, as if the skipped slots had been taken one by one: with B down, A and C alternate.
// The claim is a compare-and-swap so that it never hides a slot another caller took.
func (r *Ring) pick(s *snapshot) (int, bool) {
	n := uint64(len(s.schedule))
	if n == 0 {
		return 0, false
	}
	for try := 1; ; try++ {
		// Use the value Add returns: reading the counter again would race with other callers.
		i := r.next.Add(1) - 1
		pos := i % n
		skipped := uint64(0)
		for !s.members[s.schedule[pos]].pickable() {
			if skipped++; skipped == n {
				return 0, false
			}
			if pos++; pos == n {
				pos = 0
			}
		}
		if skipped == 0 || try == claimTries || r.next.CompareAndSwap(i+1, i+1+skipped) {
			return int(s.schedule[pos]), true
		}
		// Someone took the slot after ours meanwhile: start again from a fresh one.
	}
}

// newMember checks b against the members that already have its ID and its Addr (nil when
// none) and returns it as a new, up member.
func newMember(b Backend, sameID, sameAddr *member) (*member, error) {
	switch {
	case b.ID == "" || b.Addr == "":
		return nil, fmt.Errorf("ring: backend %q at %q needs both an ID and an Addr", b.ID, b.Addr)
	case sameID != nil:
		return nil, fmt.Errorf("%w: id %q is already in the ring (at %s)", ErrDuplicate, b.ID, sameID.addr)
	case sameAddr != nil:
		return nil, fmt.Errorf("%w: address %s is already in the ring (as %q)", ErrDuplicate, b.Addr, sameAddr.id)
	}
	m := &member{id: b.ID, addr: b.Addr, seed: idSeed(b.ID), weight: max(1, b.Weight), ramp: rampFull}
	m.maxConn.Store(int64(max(0, b.MaxConn)))
	return m, nil
}

// newSnapshot builds the snapshot of members; backends[i] is members[i]'s Backend. The
// snapshot keeps a copy of backends, each with the member's configured weight.
func newSnapshot(members []*member, backends []Backend) *snapshot {
	backends = slices.Clone(backends) // published snapshots may share the old one
	byID := make(map[string]int32, len(members))
	for i, m := range members {
		byID[m.id] = int32(i)
		backends[i].Weight = m.weight
	}
	s := &snapshot{members: members, backends: backends, byID: byID, uniform: true}
	s.weights = make([]int, len(members))
	s.cum = make([]uint64, len(members))
	for i, m := range members {
		s.weights[i] = m.weight * m.ramp
		s.total += uint64(s.weights[i])
		s.cum[i] = s.total
		s.uniform = s.uniform && s.weights[i] == s.weights[0]
	}
	s.schedule = smoothSchedule(s.weights)
	return s
}

// maxSlots bounds the schedule (4 bytes a slot). Weights that add up to more, after dividing
// by their common divisor, are scaled down in proportion, each to at least 1.
const maxSlots = 1 << 20

// smoothSchedule returns one cycle of nginx's smooth weighted round-robin over members of
// these weights (indexes into weights):
// each member appears exactly weight/g times (g the weights' greatest common divisor, which
// keeps the cycle short), spread out rather than in runs; equal weights give plain ring order.
//
// nginx adds every member's weight to its score each step and takes the highest score (ties:
// the earlier member), which then loses the total. Members of equal weight therefore take
// their turns in ring order, so one score per distinct weight is enough: the build costs
// O(slots × distinct weights), not O(slots × members), paid once per Add or Remove.
func smoothSchedule(weights []int) []int32 {
	weights = scaledWeights(weights)
	type class struct {
		weight, score int
		members       []int32 // in ring order
		next          int     // the member whose turn it is
	}
	var classes []*class
	byWeight := map[int]*class{}
	total := 0
	for i, w := range weights {
		c := byWeight[w]
		if c == nil {
			c = &class{weight: w}
			byWeight[w] = c
			classes = append(classes, c)
		}
		c.members = append(c.members, int32(i))
		total += w
	}
	schedule := make([]int32, total)
	for slot := range schedule {
		var best *class
		for _, c := range classes {
			c.score += c.weight
			if best == nil || c.score > best.score || c.score == best.score && c.members[c.next] < best.members[best.next] {
				best = c
			}
		}
		schedule[slot] = best.members[best.next]
		if best.next++; best.next == len(best.members) {
			// Every member of the class has had its turn and lost the total once more.
			best.next, best.score = 0, best.score-total
		}
	}
	return schedule
}

// scaledWeights returns each weight's share of the schedule: its weight divided by the
// weights' greatest common divisor, and scaled down when they add up to over maxSlots.
func scaledWeights(in []int) []int {
	g, sum := 0, 0
	for _, w := range in {
		g = gcd(g, w)
		sum += w
	}
	weights := make([]int, len(in))
	if g == 0 {
		return weights
	}
	sum /= g
	for i, w := range in {
		weights[i] = w / g
		if sum > maxSlots {
			weights[i] = max(1, weights[i]*maxSlots/sum)
		}
	}
	if sum > maxSlots {
		g = 0
		for _, w := range weights {
			g = gcd(g, w)
		}
		for i := range weights {
			weights[i] /= g
		}
	}
	return weights
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
