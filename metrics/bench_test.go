package metrics

import (
	"io"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// loopsSource is a Source shaped like l4's: loops with their own Counters and a
// BackendCounters per backend, summed at Collect.
type loopsSource struct {
	ids   []string
	loops []loopCounters
}

type loopCounters struct {
	global   Counters
	backends []BackendCounters // by the index of the backend in ids
}

func newLoopsSource(loops, backends int) *loopsSource {
	s := &loopsSource{}
	for i := range backends {
		s.ids = append(s.ids, "web-"+strconv.Itoa(i))
	}
	for range loops {
		lc := loopCounters{backends: make([]BackendCounters, backends)}
		for b := range lc.backends {
			lc.backends[b] = BackendCounters{Connections: 100, BytesReceived: 1 << 20, BytesSent: 4096, HTTP: [NumMethods]uint64{MethodGet: 90, MethodPost: 10}}
			lc.global.Accepted += 100
			lc.global.Durations.Observe(time.Duration(b) * time.Millisecond)
		}
		s.loops = append(s.loops, lc)
	}
	return s
}

func (s *loopsSource) Collect(snap *Snapshot) {
	for i, id := range s.ids {
		b := snap.AddBackend("default", id)
		b.Up = true
		for l := range s.loops {
			b.BackendCounters.Add(&s.loops[l].backends[i])
		}
	}
	for l := range s.loops {
		snap.Counters.Add(&s.loops[l].global)
	}
}

// BenchmarkSnapshotFill is what a Source costs per scrape: summing 2 loops' counters into a
// reused Snapshot.
func BenchmarkSnapshotFill(b *testing.B) {
	for _, n := range []int{3, 1000} {
		b.Run(strconv.Itoa(n)+"backends", func(b *testing.B) {
			src := newLoopsSource(2, n)
			var snap Snapshot
			b.ReportAllocs()
			for b.Loop() {
				snap.Reset()
				src.Collect(&snap)
			}
			if snap.Backends[n-1].Connections != 200 {
				b.Fatalf("summed %d connections, want 200", snap.Backends[n-1].Connections)
			}
		})
	}
}

// BenchmarkScrape is a whole GET /metrics: the Source, const metrics, the Go and process
// collectors and the text encoding.
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{3, 1000} {
		b.Run(strconv.Itoa(n)+"backends", func(b *testing.B) {
			m := New(Options{Version: "bench"})
			m.SetSource(newLoopsSource(2, n))
			probe := m.ProbeObserver("default")
			for i := range n {
				probe("web-"+strconv.Itoa(i), time.Millisecond)
			}
			h := m.Handler()
			req := httptest.NewRequest("GET", "/metrics", nil)
			b.ReportAllocs()
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				size = rec.Body.Len()
				io.Discard.Write(rec.Body.Bytes())
			}
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}

// BenchmarkObserve is the per-connection cost on a loop: one histogram observation and a
// few counter increments.
func BenchmarkObserve(b *testing.B) {
	var c Counters
	var bc BackendCounters
	method := []byte("GET")
	b.ReportAllocs()
	d := time.Duration(0)
	for b.Loop() {
		c.Accepted++
		c.Sniff[SniffHTTP1]++
		bc.Connections++
		bc.HTTP[MethodOf(method)]++
		d += 3 * time.Microsecond
		c.Durations.Observe(d)
	}
}

func TestSnapshotFillDoesNotAllocateOnceGrown(t *testing.T) {
	src := newLoopsSource(2, 1000)
	var snap Snapshot
	src.Collect(&snap)
	allocs := testing.AllocsPerRun(20, func() {
		snap.Reset()
		src.Collect(&snap)
	})
	if allocs != 0 {
		t.Errorf("filling a reused Snapshot of 1000 backends: %v allocs, want 0", allocs)
	}
	if len(snap.Backends) != 1000 || snap.Accepted != 200_000 {
		t.Errorf("after Reset and fill: %d rows, %d accepted; want 1000 and 200000", len(snap.Backends), snap.Accepted)
	}
}
