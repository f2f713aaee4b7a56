package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"strconv"
	"sync"
	"time"
)

// With -rate, each system also gets an open-loop load at a fixed rate: the requests are
// scheduled in advance, spread evenly over keep-alive connections, and each one's latency
// runs from its scheduled send time to the end of its response. A connection still waiting
// for an answer sends its next request late, and that lateness counts: a stall shows in the
// latency of every request it delayed (no coordinated omission). wrk cannot hold a rate.

// rateWarmup is how long the load runs before the window whose requests are measured.
const rateWarmup = time.Second

// rateRequest is what the generator sends: the request wrk sends, kept alive.
var rateRequest = []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

// rateRun is one fixed-rate run: what the responses that ended inside its window got. A
// system that keeps up answers in the window the requests scheduled in it; one that falls
// behind answers fewer, later, and its latencies hold the wait.
type rateRun struct {
	achieved  float64 // responses per second of window
	mean, p99 time.Duration
	cpu       float64 // the proxy's µs of CPU per response, 0 without a proxy process
}

// runRate offers rate requests a second to s over conns connections for rateWarmup and
// then the window dur, whose responses it measures, and reads the CPU of s across the
// window.
func runRate(s *system, rate float64, conns int, dur time.Duration) (rateRun, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", s.port)
	start := time.Now().Add(50 * time.Millisecond) // every connection dialled before the first send
	from, to := start.Add(rateWarmup), start.Add(rateWarmup+dur)
	gens := make([]rateConn, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for i := range gens {
		g := &gens[i]
		g.first = start.Add(time.Duration(float64(i) * 1e9 / rate))
		g.every = time.Duration(float64(conns) * 1e9 / rate)
		g.from, g.to = from, to
		wg.Go(func() { errs[i] = g.run(addr) })
	}
	var pids []int
	if s.cmd != nil {
		pids = processTree(s.cmd.Process.Pid)
	}
	time.Sleep(time.Until(from))
	before := treeTicks(pids)
	time.Sleep(time.Until(to))
	after := treeTicks(pids)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rateRun{}, err
	}
	var h latencies
	for i := range gens {
		h.merge(&gens[i].lat)
	}
	if h.n == 0 {
		return rateRun{}, fmt.Errorf("no response in the measured window")
	}
	r := rateRun{achieved: float64(h.n) / dur.Seconds(), mean: h.mean(), p99: h.percentile(99)}
	if pids != nil {
		r.cpu = float64(after-before) * 1e6 / clockTick / float64(h.n)
	}
	time.Sleep(300 * time.Millisecond) // let the proxies settle between runs, as after wrk
	return r, nil
}

// rateConn is one connection's share of the schedule: requests at first, first+every, …;
// the responses that end in [from, to) are measured, and no request is sent after to.
type rateConn struct {
	first, from, to time.Time
	every           time.Duration
	lat             latencies
}

func (g *rateConn) run(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("rate: %w", err)
	}
	defer c.Close()
	// A proxy that stops answering fails the run instead of hanging it.
	c.SetDeadline(g.to.Add(10 * time.Second))
	buf := make([]byte, 4096)
	for at := g.first; at.Before(g.to); at = at.Add(g.every) {
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		} else if time.Now().After(g.to) {
			return nil // behind schedule at the end: the rest was never sent
		}
		if _, err := c.Write(rateRequest); err != nil {
			return fmt.Errorf("rate: sending: %w", err)
		}
		if err := readResponse(c, buf); err != nil {
			return fmt.Errorf("rate: %w", err)
		}
		if now := time.Now(); !now.Before(g.from) && now.Before(g.to) {
			g.lat.add(now.Sub(at))
		}
	}
	return nil
}

var errPartial = errors.New("response incomplete")

// readResponse reads one whole response into buf, which must hold it.
func readResponse(c net.Conn, buf []byte) error {
	have := 0
	for {
		n, err := c.Read(buf[have:])
		have += n
		size, perr := responseSize(buf[:have])
		switch {
		case perr == nil && size == have:
			return nil
		case perr == nil:
			return fmt.Errorf("%d bytes after a %d-byte response: nothing was pipelined", have-size, size)
		case !errors.Is(perr, errPartial):
			return perr
		case err != nil:
			return fmt.Errorf("reading a response: %w", err)
		case have == len(buf):
			return fmt.Errorf("a response longer than %d bytes", len(buf))
		}
	}
}

// responseSize is the length of the 200 response at the start of b, head and body, or
// errPartial if b does not hold all of it yet. It reads only what the backends send: a
// status line and a Content-Length, no chunks.
func responseSize(b []byte) (int, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")[:min(len(b), 13)]) {
			return 0, fmt.Errorf("not a 200 response: %q", b[:min(len(b), 40)])
		}
		return 0, errPartial
	}
	head := b[:end+2]
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) {
		return 0, fmt.Errorf("not a 200 response: %q", head[:min(len(head), 40)])
	}
	length := -1
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(name, []byte("Content-Length")) {
			n, err := strconv.Atoi(string(bytes.TrimSpace(value)))
			if err != nil || n < 0 {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
			length = n
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("a response without Content-Length")
	}
	if size := end + 4 + length; len(b) >= size {
		return size, nil
	}
	return 0, errPartial
}

// latencies is a histogram of durations, exact below latencySub ns and within 1/latencySub
// of the value above, so that recording allocates nothing and merging is a sum.
type latencies struct {
	count [latencyBuckets]uint64
	n     int
	sum   time.Duration
}

const (
	latencySub     = 128             // buckets per power of two
	latencyBuckets = latencySub * 30 // to 2^36 ns, over a minute
)

func (h *latencies) add(d time.Duration) {
	h.count[latencyBucket(d)]++
	h.n++
	h.sum += d
}

func (h *latencies) merge(o *latencies) {
	for i, c := range o.count {
		h.count[i] += c
	}
	h.n += o.n
	h.sum += o.sum
}

func (h *latencies) mean() time.Duration { return h.sum / time.Duration(max(h.n, 1)) }

// percentile is the nearest-rank p-th percentile: the smallest recorded value that p% of
// the values do not exceed, given as the highest value of its bucket.
func (h *latencies) percentile(p float64) time.Duration {
	rank := uint64(max(1, math.Ceil(float64(h.n)*p/100)))
	var seen uint64
	for i, c := range h.count {
		if seen += c; seen >= rank {
			return latencyTop(i)
		}
	}
	return latencyTop(latencyBuckets - 1)
}

// latencyBucket numbers the values below latencySub ns one by one, then splits each power
// of two above into latencySub equal buckets; values past the last bucket share it.
func latencyBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < latencySub {
		return int(v)
	}
	shift := bits.Len64(v) - bits.Len64(latencySub-1) - 1 // v>>shift is in [latencySub, 2·latencySub)
	return min(latencySub*(shift+1)+int(v>>shift)-latencySub, latencyBuckets-1)
}

// latencyTop is the highest value bucket i holds.
func latencyTop(i int) time.Duration {
	if i < latencySub {
		return time.Duration(i)
	}
	shift := i/latencySub - 1
	low := uint64(latencySub+i%latencySub) << shift
	return time.Duration(low + 1<<shift - 1)
}
