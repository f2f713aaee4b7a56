package ring

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// perLoopCounts is the alternative to one padded atomic per member: each event loop counts
// its own connections in a row of its own, and a pick sums the rows. Kept here as the
// benchmark's contender; the ring uses the padded atomic, which measured faster.
type perLoopCounts struct {
	rows [][]atomic.Int64 // [loop][member]; each row its own allocation, padded at both ends
}

func newPerLoopCounts(loops, members int) *perLoopCounts {
	c := &perLoopCounts{rows: make([][]atomic.Int64, loops)}
	const pad = int(unsafe.Sizeof(cpu.CacheLinePad{})) / 8
	for l := range c.rows {
		c.rows[l] = make([]atomic.Int64, members+2*pad)[pad : pad+members]
	}
	return c
}

func (c *perLoopCounts) active(i int) int64 {
	var sum int64
	for _, row := range c.rows {
		sum += row[i].Load()
	}
	return sum
}

// leastConn is Ring.leastConn over per-loop counts.
func (c *perLoopCounts) leastConn(r *Ring, s *snapshot) int {
	n := len(s.members)
	start := int(r.next.Add(1) % uint64(n))
	best, bestActive := -1, int64(0)
	for k := range n {
		i := (start + k) % n
		if !s.members[i].pickable() {
			continue
		}
		if a := c.active(i); best < 0 || lighter(s, i, a, best, bestActive) {
			best, bestActive = i, a
		}
	}
	return best
}

// BenchmarkActiveCounts compares the two ways of keeping active counts for leastconn: one
// op is a pick that reads every member's count, a start and an end, from every loop at once.
func BenchmarkActiveCounts(b *testing.B) {
	for _, members := range []int{8, 64} {
		bs := backends(members)
		for i := range bs {
			bs[i].ID, bs[i].Addr = string(rune('A'+i%26))+string(rune('a'+i/26)), bs[i].ID+string(rune(i))+":1"
		}
		b.Run("padded-atomic/"+strconv.Itoa(members), func(b *testing.B) {
			r := mustNewWith(b, Config{Balance: LeastConn}, bs...)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c := r.Cursor()
					c.Next()
					a := c.Start()
					a.End()
				}
			})
		})
		b.Run("per-loop/"+strconv.Itoa(members), func(b *testing.B) {
			r := mustNewWith(b, Config{Balance: LeastConn}, bs...)
			counts := newPerLoopCounts(runtime.GOMAXPROCS(0), members)
			var loops atomic.Int32
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				row := counts.rows[int(loops.Add(1)-1)%len(counts.rows)]
				for pb.Next() {
					i := counts.leastConn(r, r.snap.Load())
					row[i].Add(1)
					row[i].Add(-1)
				}
			})
		})
	}
}
