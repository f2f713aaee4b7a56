//go:build linux

package l4

// Head buffers hold what lb must keep before it can splice: a connection's first bytes until
// they are replayed, and with sticky sessions the backend's first response head. A buffer
// grows with what arrives, in classes from 256 B doubling, so a 300-byte head holds 512 B,
// not --max-header-bytes, and a connection that has sent nothing holds none. A loop keeps the
// buffers its connections gave back, per class, and frees each second those it did not need
// in the second before, so memory follows the load down.
//
// Every buffer a connection holds counts against one bound (Config.MaxHeadMemory). A read
// that could take a buffer past it is not made: the connection goes on with what it has
// (routed unparsed, or its response head passed through as it came), and no byte is lost.

import "math/bits"

const (
	minHeadBuf = 256
	trimEvery  = int64(1e9) // nanoseconds between trims of the loops' spare buffers
)

// headCap is the capacity of the class that holds n bytes: 0 for none.
func headCap(n int) int {
	if n <= 0 {
		return 0
	}
	return minHeadBuf << headClass(n)
}

func headClass(n int) int {
	if n <= minHeadBuf {
		return 0
	}
	return bits.Len(uint((n - 1) / minHeadBuf))
}

// spareHeads are a loop's buffers between connections: free[i] holds buffers of class i, and
// low[i] is the fewest it held since the last trim, which nobody needed.
type spareHeads struct {
	free [][][]byte
	low  []int
}

// takeHead returns a buffer of n bytes' class, spare or new.
func (l *loop) takeHead(n int) []byte {
	i := headClass(n)
	h := &l.heads
	for len(h.free) <= i {
		h.free, h.low = append(h.free, nil), append(h.low, 0)
	}
	if k := len(h.free[i]); k > 0 {
		b := h.free[i][k-1]
		h.free[i] = h.free[i][:k-1]
		h.low[i] = min(h.low[i], k-1)
		return b
	}
	return make([]byte, headCap(n))
}

func (l *loop) giveHead(b []byte) {
	i := headClass(cap(b))
	l.heads.free[i] = append(l.heads.free[i], b[:cap(b)])
}

// trimHeads frees the spare buffers no connection took since the last trim.
func (l *loop) trimHeads() {
	h := &l.heads
	for i := range h.free {
		drop := h.low[i]
		clear(h.free[i][:drop])
		h.free[i] = append(h.free[i][:0], h.free[i][drop:]...)
		h.low[i] = len(h.free[i])
	}
}

// reserveHead counts n more bytes of head buffers held, unless that passes MaxHeadMemory.
func (s *Server) reserveHead(n int) bool {
	if s.headHeld.Add(int64(n)) > s.headLimit {
		s.headHeld.Add(int64(-n))
		s.overHeadMemory.Add(1)
		return false
	}
	return true
}

// headBuf is a head buffer and the bytes it holds.
type headBuf struct {
	b []byte
	n int
}

func (h *headBuf) bytes() []byte { return h.b[:h.n] }

// holdHead makes room in h for need bytes. It returns false, changing nothing, when the
// growth would pass MaxHeadMemory.
func (l *loop) holdHead(h *headBuf, need int) bool {
	grow := headCap(need) - cap(h.b)
	if grow > 0 && !l.s.reserveHead(grow) {
		return false
	}
	if grow > 0 {
		l.moveHead(h, need)
	}
	return true
}

// moveHead moves what h holds to a buffer of need's class; the old one goes spare.
func (l *loop) moveHead(h *headBuf, need int) {
	b := l.takeHead(need)
	if h.b != nil {
		copy(b, h.b[:h.n])
		l.giveHead(h.b)
	}
	h.b = b
}

// readHead reads from fd, as sysRead does, what fits under limit bytes in all and appends it
// to h, which grows to what came. Room for a whole read is reserved first: a read that
// could pass MaxHeadMemory is not made, and it returns errHeadMemory.
func (l *loop) readHead(h *headBuf, fd, limit int) (int, error) {
	room := min(len(l.buf), limit-h.n)
	worst := max(headCap(h.n+room)-cap(h.b), 0)
	if worst > 0 && !l.s.reserveHead(worst) {
		return 0, errHeadMemory
	}
	n, err := sysRead(fd, l.buf[:room])
	need := h.n + max(n, 0)
	grow := max(headCap(need)-cap(h.b), 0)
	l.s.headHeld.Add(int64(grow - worst)) // what the read did not need
	if grow > 0 {
		l.moveHead(h, need)
	}
	if n > 0 {
		h.n += copy(h.b[h.n:], l.buf[:n])
	}
	return n, err
}

// putHead gives h's buffer back to the loop.
func (l *loop) putHead(h *headBuf) {
	if h.b != nil {
		l.s.headHeld.Add(int64(-cap(h.b)))
		l.giveHead(h.b)
	}
	*h = headBuf{}
}

// putRouting gives a connection's routing state back to the loop, and its buffer.
func (l *loop) putRouting(c *conn) {
	l.putHead(&c.rt.first)
	l.routings.put(c.rt)
	c.rt = nil
}
