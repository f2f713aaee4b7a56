// Package ring chooses backends: a circular ring walked in smooth weighted round-robin order,
// skipping the backends that are down.
//
// Picks are lock-free and allocation-free: readers load an immutable snapshot through an
// atomic pointer and take a slot from one shared atomic counter. Writers (Add, Remove) build
// a whole new snapshot and swap it in, so a reader never sees a half-updated ring. Up/down
// state lives on each member, outside the snapshot, so it survives Add and Remove of others.
package ring

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// Backend is one server the ring can pick. Its ID and Addr are each unique within a ring.
type Backend struct {
	ID     string // stable, opaque id (cookie value later); unique in a ring
	Addr   string // host:port to dial, unique in a ring
	Weight int    // share of picks; < 1 counts as 1
}

// Status is a backend and whether it is up, as Snapshot reports it.
type Status struct {
	Backend
	Up bool
}

// ErrDuplicate is returned (wrapped) by New and Add when a backend's ID or Addr is already
// in the ring; the ring is then unchanged.
var ErrDuplicate = errors.New("duplicate backend")

// member is one backend of the ring. The same *member is shared by every snapshot that
// contains it, so its up state is kept when other backends come and go.
type member struct {
	Backend
	up atomic.Bool
}

// snapshot is an immutable view of the ring: never modified once published.
type snapshot struct {
	members  []*member          // ring order: the order of New and Add
	schedule []int32            // indexes into members, one per slot; see smoothSchedule
	byID     map[string]*member // for Lookup and SetUp
}

// Ring is a circular list of backends. All methods are safe for concurrent use; Next,
// Cursor, Lookup and SetUp never block, and Next and Lookup never allocate.
// The zero Ring is not usable: call New.
type Ring struct {
	snap atomic.Pointer[snapshot]
	mu   sync.Mutex // serialises writers; readers never take it

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
		byID[m.ID], byAddr[m.Addr] = m, m
	}
	r.snap.Store(newSnapshot(members, byID))
	return r, nil
}

// Add appends b to the ring, up, checked and normalised as in New. It fails with
// ErrDuplicate if b's ID or Addr is already in the ring. A backend removed and added again is a new member: it starts up, whatever its
// state before.
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
	var sameAddr *member
	for _, m := range old.members {
		if m.Addr == b.Addr {
			sameAddr = m
		}
	}
	m, err := newMember(b, old.byID[b.ID], sameAddr)
	if err != nil {
		return err
	}
	m.up.Store(up)
	members := make([]*member, len(old.members), len(old.members)+1)
	copy(members, old.members)
	r.snap.Store(newSnapshot(append(members, m), nil))
	return nil
}

// Remove takes the backend with this id out of the ring and reports whether it was there.
// Picks already made are not affected; later picks never return it.
func (r *Ring) Remove(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Load()
	gone, ok := old.byID[id]
	if !ok {
		return false
	}
	members := make([]*member, 0, len(old.members)-1)
	for _, m := range old.members {
		if m != gone {
			members = append(members, m)
		}
	}
	r.snap.Store(newSnapshot(members, nil))
	return true
}

// SetUp marks the backend with this id up or down and reports whether that changed its
// state: false for an unknown id or when it already was so. Of concurrent callers setting
// the same state, exactly one sees true, so callers can log transitions once.
func (r *Ring) SetUp(id string, up bool) (changed bool) {
	m, ok := r.snap.Load().byID[id]
	if !ok {
		return false
	}
	return m.up.Swap(up) != up
}

// Next returns the next up backend in the rotation, or false when none is up.
//
// With every backend up, each call takes exactly one slot of the schedule, so over any run
// of calls (concurrent or not) each backend gets its weight's share exactly, up to the one
// cycle in progress. Slots of down backends are skipped and count as taken, so the up ones
// keep sharing in proportion to their weights.
func (r *Ring) Next() (Backend, bool) {
	s := r.snap.Load()
	i, ok := r.pick(s)
	if !ok {
		return Backend{}, false
	}
	return s.members[i].Backend, true
}

// Lookup returns the backend with this id, whether it is up, and whether it is in the ring.
// It does not allocate.
func (r *Ring) Lookup(id string) (b Backend, up bool, ok bool) {
	m, ok := r.snap.Load().byID[id]
	if !ok {
		return Backend{}, false, false
	}
	return m.Backend, m.up.Load(), true
}

// Snapshot returns every backend with its state, in ring order. The slice is the caller's.
func (r *Ring) Snapshot() []Status {
	members := r.snap.Load().members
	out := make([]Status, len(members))
	for i, m := range members {
		out[i] = Status{Backend: m.Backend, Up: m.up.Load()}
	}
	return out
}

// Len returns the number of backends in the ring, up or down.
func (r *Ring) Len() int {
	return len(r.snap.Load().members)
}

// Cursor returns a cursor for trying backends one after another, for retries. It sees the
// ring as it is now: later Add and Remove do not change what it walks.
func (r *Ring) Cursor() Cursor {
	return Cursor{r: r, s: r.snap.Load(), first: -1}
}

// Cursor walks a ring for one connection's retries. Its first Next gives what Ring.Next
// would (and takes that slot); later ones walk the other members in ring order after the
// first, each at most once, skipping those down at that moment. It is a plain value: no
// allocation, not safe for concurrent use. The zero Cursor yields nothing.
type Cursor struct {
	r      *Ring
	s      *snapshot
	first  int // member index of the first pick; -1 before it
	walked int // members after first already considered
}

// Next returns the next backend to try, or false when there is none left.
func (c *Cursor) Next() (Backend, bool) {
	if c.r == nil {
		return Backend{}, false
	}
	members := c.s.members
	if c.first < 0 {
		i, ok := c.r.pick(c.s)
		if !ok {
			c.r = nil // all were down just now: nothing left to try
			return Backend{}, false
		}
		c.first = i
		return members[i].Backend, true
	}
	for c.walked < len(members)-1 {
		c.walked++
		m := members[(c.first+c.walked)%len(members)]
		if m.up.Load() {
			return m.Backend, true
		}
	}
	return Backend{}, false
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
		for !s.members[s.schedule[pos]].up.Load() {
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
		return nil, fmt.Errorf("%w: id %q is already in the ring (at %s)", ErrDuplicate, b.ID, sameID.Addr)
	case sameAddr != nil:
		return nil, fmt.Errorf("%w: address %s is already in the ring (as %q)", ErrDuplicate, b.Addr, sameAddr.ID)
	}
	if b.Weight < 1 {
		b.Weight = 1
	}
	m := &member{Backend: b}
	m.up.Store(true)
	return m, nil
}

// newSnapshot builds the snapshot of members; byID may be given when the caller has it.
func newSnapshot(members []*member, byID map[string]*member) *snapshot {
	if byID == nil {
		byID = make(map[string]*member, len(members))
		for _, m := range members {
			byID[m.ID] = m
		}
	}
	return &snapshot{members: members, schedule: smoothSchedule(members), byID: byID}
}

// maxSlots bounds the schedule (4 bytes a slot). Weights that add up to more, after dividing
// by their common divisor, are scaled down in proportion, each to at least 1.
const maxSlots = 1 << 20

// smoothSchedule returns one cycle of nginx's smooth weighted round-robin over members:
// each member appears exactly weight/g times (g the weights' greatest common divisor, which
// keeps the cycle short), spread out rather than in runs; equal weights give plain ring order.
//
// nginx adds every member's weight to its score each step and takes the highest score (ties:
// the earlier member), which then loses the total. Members of equal weight therefore take
// their turns in ring order, so one score per distinct weight is enough: the build costs
// O(slots × distinct weights), not O(slots × members), paid once per Add or Remove.
func smoothSchedule(members []*member) []int32 {
	weights := scaledWeights(members)
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

// scaledWeights returns each member's share of the schedule: its weight divided by the
// weights' greatest common divisor, and scaled down when they add up to over maxSlots.
func scaledWeights(members []*member) []int {
	g, sum := 0, 0
	for _, m := range members {
		g = gcd(g, m.Weight)
		sum += m.Weight
	}
	weights := make([]int, len(members))
	if g == 0 {
		return weights
	}
	sum /= g
	for i, m := range members {
		weights[i] = m.Weight / g
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
