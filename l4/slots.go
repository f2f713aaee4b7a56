//go:build linux

package l4

// slotTable holds a loop's connections by slot. Epoll events carry a slot and a generation:
// a slot is reused once its connection closes, and the generation tells a stale event from
// one for the slot's new tenant.
type slotTable struct {
	slots []*conn
	free  []int32 // free slots
	spare spares[conn]
	gen   uint32
}

// add returns a zeroed conn (phase unused) with a slot and a generation.
func (t *slotTable) add() *conn {
	c := t.spare.get()
	if n := len(t.free); n > 0 {
		c.slot, t.free = t.free[n-1], t.free[:n-1]
	} else {
		c.slot = int32(len(t.slots))
		t.slots = append(t.slots, nil)
	}
	t.gen++
	c.gen = t.gen & (1<<31 - 1) // epoll's data keeps 31 bits of it beside the side
	t.slots[c.slot] = c
	return c
}

// remove frees c's slot; c is kept for reuse, zeroed.
func (t *slotTable) remove(c *conn) {
	t.slots[c.slot] = nil
	t.free = append(t.free, c.slot)
	t.spare.put(c)
}

// lookup returns the connection in slot with generation gen, or nil.
func (t *slotTable) lookup(slot int32, gen uint32) *conn {
	if c := t.slots[slot]; c != nil && c.gen == gen {
		return c
	}
	return nil
}

// spares keeps values a loop gave back, zeroed, for its next connections: they are reused
// without a lock or the garbage collector.
type spares[T any] struct{ free []*T }

const maxSpares = 1024 // after a burst, the rest go to the garbage collector

func (s *spares[T]) get() *T {
	if n := len(s.free); n > 0 {
		v := s.free[n-1]
		s.free = s.free[:n-1]
		return v
	}
	return new(T)
}

func (s *spares[T]) put(v *T) {
	var zero T
	*v = zero
	if len(s.free) < maxSpares {
		s.free = append(s.free, v)
	}
}
