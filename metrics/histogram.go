package metrics

import "time"

// DurationBuckets are the upper bounds of the buckets of lb_connection_duration_seconds,
// from a request-and-close connection to a WebSocket open for an hour.
var DurationBuckets = [...]time.Duration{
	time.Millisecond, 5 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond,
	500 * time.Millisecond, time.Second, 5 * time.Second, 30 * time.Second,
	time.Minute, 5 * time.Minute, 30 * time.Minute, time.Hour,
}

// Histogram counts durations into DurationBuckets with plain integers. Observe it from one
// goroutine only (a loop's own); sum histograms with Add on that goroutine. It does not
// allocate. The zero value is empty and ready to use.
type Histogram struct {
	counts [len(DurationBuckets) + 1]uint64 // per bucket, not cumulative; the last is +Inf
	count  uint64
	sum    time.Duration
}

// Observe counts one duration; a negative one counts as 0.
func (h *Histogram) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(DurationBuckets) && d > DurationBuckets[i] {
		i++
	}
	h.counts[i]++
	h.count++
	h.sum += d
}

// Add adds o into h.
func (h *Histogram) Add(o *Histogram) {
	for i := range h.counts {
		h.counts[i] += o.counts[i]
	}
	h.count += o.count
	h.sum += o.sum
}

// Count returns how many durations were observed.
func (h *Histogram) Count() uint64 { return h.count }

// Sum returns the sum of the observed durations.
func (h *Histogram) Sum() time.Duration { return h.sum }

// cumulative returns the Prometheus form: for each upper bound in seconds, the count of
// durations at or below it.
func (h *Histogram) cumulative() map[float64]uint64 {
	m := make(map[float64]uint64, len(DurationBuckets))
	var n uint64
	for i, b := range DurationBuckets {
		n += h.counts[i]
		m[b.Seconds()] = n
	}
	return m
}
