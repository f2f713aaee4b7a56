// Package health observes backends: it dials each one over TCP every interval and marks it
// up or down in a ring.Ring after Rise consecutive successes or Fall consecutive failures.
// Failed dials seen by the data path count as failed probes too.
//
// Only transitions are logged, so an outage costs one line per backend, not one per probe.
package health

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"lb/ring"
)

// Config tunes a Prober. Fields below 1 take the defaults shown.
type Config struct {
	Interval time.Duration // between rounds; default 2s
	Timeout  time.Duration // per dial; default 1s
	Rise     int           // consecutive successes for a down backend to come up; default 2
	Fall     int           // consecutive failures for an up backend to go down; default 3
}

// Prober probes the backends of one ring and sets their up/down state in it. Its methods
// are safe for concurrent use.
type Prober struct {
	ring *ring.Ring
	cfg  Config
	log  zerolog.Logger

	mu     sync.Mutex        // guards counts, and orders each count update with its SetUp
	counts map[string]streak // by backend ID; only for IDs in the ring
}

// streak counts consecutive outcomes; one of the two is always 0.
type streak struct{ ok, failed int }

// errReported is the error logged when the data path's failures take a backend down.
var errReported = errors.New("dial failed on the data path")

// NewProber returns a prober for r. It probes nothing until Init or Run.
func NewProber(r *ring.Ring, cfg Config, log zerolog.Logger) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Rise < 1 {
		cfg.Rise = 2
	}
	if cfg.Fall < 1 {
		cfg.Fall = 3
	}
	return &Prober{ring: r, cfg: cfg, log: log, counts: map[string]streak{}}
}

// Init probes every backend of the ring once, concurrently, and returns when all probes
// have ended: those that answered are set up, the others down (they then need Rise
// successes). It logs one line per backend: info "backend up", or warn "backend down" with
// the error.
// Call it before traffic, so the first connections do not go to dead backends.
func (p *Prober) Init(ctx context.Context) {
	results := ProbeAll(ctx, backendsOf(p.ring), p.cfg.Timeout)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, res := range results {
		id := res.Backend.ID
		p.ring.SetUp(id, res.Up)
		if res.Up {
			p.counts[id] = streak{ok: 1}
			p.log.Info().Str("id", id).Str("addr", res.Backend.Addr).Dur("latency", res.Latency).Msg("backend up")
		} else {
			p.counts[id] = streak{failed: 1}
			p.log.Warn().Str("id", id).Str("addr", res.Backend.Addr).Err(res.Err).Msg("backend down")
		}
	}
}

// Run probes every backend in the ring each Interval until ctx is done, concurrently within
// a round, and returns once every probe it started has ended. The ring is read again each
// round, so added backends get probed and removed ones forgotten. It logs transitions only:
// warn "backend down" and info "backend up".
func (p *Prober) Run(ctx context.Context) {
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.round(ctx)
		}
	}
}

// round probes every backend of the ring once and applies the results.
func (p *Prober) round(ctx context.Context) {
	backends := backendsOf(p.ring)
	results := ProbeAll(ctx, backends, p.cfg.Timeout)
	if ctx.Err() != nil {
		return // our own cancellation failed the dials, not the backends
	}
	for _, res := range results {
		p.observe(res.Backend.ID, res.Err)
	}
	p.forgetRemoved(backends)
}

// ReportFailure counts a failed dial seen by the data path as one failed probe of the
// backend with this id, and may so take it down once Fall is reached. It is cheap, never
// blocks on I/O, and does not allocate for a backend already probed; unknown ids are ignored.
func (p *Prober) ReportFailure(id string) {
	p.observe(id, errReported)
}

// observe counts one outcome for a backend and flips its state when a streak reaches Rise
// or Fall. The streak counts outcomes in the backend's current state only: a failure resets
// the successes and the other way round.
func (p *Prober) observe(id string, err error) {
	p.mu.Lock()
	b, up, ok := p.ring.Lookup(id)
	if !ok {
		p.mu.Unlock()
		return // removed since the probe started
	}
	s := p.counts[id]
	if err == nil {
		s = streak{ok: s.ok + 1}
	} else {
		s = streak{failed: s.failed + 1}
	}
	p.counts[id] = s
	var flipped bool
	switch {
	case up && s.failed >= p.cfg.Fall:
		flipped = p.ring.SetUp(id, false)
	case !up && s.ok >= p.cfg.Rise:
		flipped = p.ring.SetUp(id, true)
	}
	p.mu.Unlock()

	switch {
	case !flipped:
	case up:
		p.log.Warn().Str("id", id).Str("addr", b.Addr).Err(err).Int("failures", s.failed).Msg("backend down")
	default:
		p.log.Info().Str("id", id).Str("addr", b.Addr).Int("successes", s.ok).Msg("backend up")
	}
}

// forgetRemoved drops the streaks of backends no longer in the ring, so the map stays the
// size of the ring and a backend added back later starts counting afresh.
func (p *Prober) forgetRemoved(current []ring.Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := make(map[string]bool, len(current))
	for _, b := range current {
		keep[b.ID] = true
	}
	for id := range p.counts {
		if !keep[id] {
			delete(p.counts, id)
		}
	}
}

// Result is one probe of one backend. Err is nil exactly when Up is true.
type Result struct {
	Backend ring.Backend
	Up      bool
	Latency time.Duration // time the dial took, successful or not
	Err     error
}

// ProbeAll dials every backend once over TCP, concurrently, each bounded by timeout and by
// ctx, and returns when all dials have ended. Results are in the order of backends.
func ProbeAll(ctx context.Context, backends []ring.Backend, timeout time.Duration) []Result {
	results := make([]Result, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Go(func() { results[i] = probe(ctx, b, timeout) })
	}
	wg.Wait()
	return results
}

// probe dials b once and closes the connection at once: accepting it is the whole check.
func probe(ctx context.Context, b ring.Backend, timeout time.Duration) Result {
	d := net.Dialer{Timeout: timeout}
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", b.Addr)
	res := Result{Backend: b, Latency: time.Since(start), Err: err, Up: err == nil}
	if err == nil {
		c.Close()
	}
	return res
}

func backendsOf(r *ring.Ring) []ring.Backend {
	snap := r.Snapshot()
	out := make([]ring.Backend, len(snap))
	for i, s := range snap {
		out[i] = s.Backend
	}
	return out
}
