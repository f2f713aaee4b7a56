// Package health observes backends: it checks each one every interval and marks it up or
// down in a ring.Ring after Rise consecutive successes or Fall consecutive failures.
// Failed dials seen by the data path count as failed probes too. A check is a TCP connect,
// or an HTTP GET of a path wanting a status in a range (Config.HTTPPath, or a backend's
// own Check); a backend that takes PROXY protocol gets a header for lb's own connection
// first. With slow start configured on the ring, Run also moves the ramps along.
//
// Only transitions are logged, so an outage costs one line per backend, not one per probe.
package health

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
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

	// HTTPPath, when set, makes the default check an HTTP/1.1 GET of this path (it must
	// start with '/'), up on a status in Expect within Timeout. A backend's own Check wins.
	HTTPPath string
	Expect   StatusRange // default DefaultStatus (2xx and 3xx)

	// Proxy is the PROXY protocol version ("v1", "v2") of the backends' pool, so that probes
	// speak what the data path speaks: a backend's own Proxy wins; "" sends none.
	Proxy string

	// OnProbe, if set, hears how long each probe took, failed ones included (metrics). It
	// must be safe for concurrent use and not block.
	OnProbe func(id string, latency time.Duration)

	// Resolver looks up the backends' names; nil: net.DefaultResolver.
	Resolver *net.Resolver
}

// Prober probes the backends of one ring and sets their up/down state in it. Its methods
// are safe for concurrent use.
type Prober struct {
	ring         *ring.Ring
	log          zerolog.Logger
	reconfigured chan struct{} // Reconfigure to Run: the interval may have changed

	mu     sync.Mutex // guards cfg, counts and last, and orders each count update with its SetUp
	cfg    Config
	counts map[string]streak    // by backend ID; only for IDs in the ring
	last   map[string]Probe     // the latest probe of each backend, by ID; only for IDs in the ring
	change map[string]time.Time // when each backend last went up or down, by ID
	short  atomic.Bool          // a probe failed for want of lb's own resources, and none was made since
}

// streak counts consecutive outcomes; one of the two is always 0.
type streak struct{ ok, failed int }

// errReported is the error logged when the data path's failures take a backend down.
var errReported = errors.New("dial failed on the data path")

// NewProber returns a prober for r. It probes nothing until Init or Run.
func NewProber(r *ring.Ring, cfg Config, log zerolog.Logger) *Prober {
	return &Prober{ring: r, cfg: withDefaults(cfg), log: log, reconfigured: make(chan struct{}, 1),
		counts: map[string]streak{}, last: map[string]Probe{}, change: map[string]time.Time{}}
}

// withDefaults gives cfg's zero fields their defaults.
func withDefaults(cfg Config) Config {
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
	if cfg.Expect == (StatusRange{}) {
		cfg.Expect = DefaultStatus
	}
	return cfg
}

// Reconfigure makes cfg the prober's config from its next probe on, as after a reload of a
// pool whose health settings changed. The backends keep their state and streaks; Run takes
// the new interval, and the ring's slow start, at once.
func (p *Prober) Reconfigure(cfg Config) {
	p.mu.Lock()
	p.cfg = withDefaults(cfg)
	p.mu.Unlock()
	select {
	case p.reconfigured <- struct{}{}:
	default: // Run has one to read already
	}
}

// Config returns the config in effect, its defaults filled in.
func (p *Prober) Config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// Init probes every backend of the ring once and returns when all probes have ended (or ctx
// is done): those that answered are set up, the others down (they then need Rise
// successes). A backend whose probe could not be made for want of lb's own resources (see
// localShortage) stays up. It logs "backend up" and "backend down" (with the error) for the
// first few of each, then one "backends probed" line with the counts, so a list of 100,000
// backends does not log 100,000 lines.
// Call it before traffic, so the first connections do not go to dead backends.
func (p *Prober) Init(ctx context.Context) {
	results := ProbeAllWith(ctx, backendsOf(p.ring), p.Config())
	if ctx.Err() != nil {
		return // stopped: the probes that were cut say nothing of the backends
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	up, down, skipped := 0, 0, 0
	for _, res := range results {
		id := res.Backend.ID
		p.record(res)
		switch {
		case res.Up:
			p.ring.SetUp(id, true)
			p.counts[id] = streak{ok: 1}
			if up++; up <= initLines {
				p.log.Info().Str("id", id).Str("addr", res.Backend.Addr).Dur("latency", res.Latency).Msg("backend up")
			}
		case localShortage(res.Err):
			skipped++
		default:
			p.ring.SetUp(id, false)
			p.counts[id] = streak{failed: 1}
			if down++; down <= initLines {
				p.log.Warn().Str("id", id).Str("addr", res.Backend.Addr).Err(res.Err).Msg("backend down")
			}
		}
	}
	e := p.log.Info()
	if skipped > 0 {
		e = p.log.Warn().Int("not_probed", skipped).Str("why", "lb ran out of descriptors or memory: they stay up; raise the open-files limit")
	}
	e.Int("up", up).Int("down", down).Msg("backends probed")
}

// initLines is how many backends of each state Init names one by one.
const initLines = 5

// localShortage reports whether a dial failed for want of lb's own resources (descriptors,
// socket buffers, memory, ephemeral ports), which says nothing about the backend.
func localShortage(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// Run probes every backend in the ring each Interval until ctx is done, concurrently within
// a round, and returns once every probe it started has ended. The ring is read again each
// round, so added backends get probed and removed ones forgotten. It logs transitions only:
// warn "backend down" and info "backend up". With slow start on the ring, it also calls
// Ring.Ramp every twentieth of the ramp (10 ms to 1 s) and logs "backend at full weight".
func (p *Prober) Run(ctx context.Context) {
	tick := time.NewTicker(p.Config().Interval)
	defer tick.Stop()
	ramp := time.NewTicker(rampEvery(p.ring.Config().SlowStart))
	defer ramp.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.round(ctx)
		case <-p.reconfigured:
			tick.Reset(p.Config().Interval)
			ramp.Reset(rampEvery(p.ring.Config().SlowStart))
		case now := <-ramp.C:
			_, done := p.ring.Ramp(now)
			for _, id := range done {
				p.log.Info().Str("id", id).Msg("backend at full weight: slow start done")
			}
		}
	}
}

// rampEvery is how often Run moves slow start along: a twentieth of the ramp, from 10 ms
// to 1 s (1 s without slow start, when Ramp costs nothing, so that a reload may turn it on).
func rampEvery(slow time.Duration) time.Duration {
	if slow <= 0 {
		return time.Second
	}
	return min(time.Second, max(10*time.Millisecond, slow/20))
}

// round probes every backend of the ring once and applies the results.
func (p *Prober) round(ctx context.Context) {
	backends := backendsOf(p.ring)
	results := ProbeAllWith(ctx, backends, p.Config())
	if ctx.Err() != nil {
		return // our own cancellation failed the dials, not the backends
	}
	for _, res := range results {
		p.mu.Lock()
		p.record(res)
		p.mu.Unlock()
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
	if localShortage(err) {
		p.shortage(err)
		return
	}
	p.mu.Lock()
	b, up, ok := p.ring.Lookup(id)
	if !ok {
		p.mu.Unlock()
		return // removed since the probe started
	}
	p.short.Store(false)
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
	if flipped {
		p.change[id] = time.Now()
	}
	p.mu.Unlock()

	switch {
	case !flipped:
	case up:
		p.log.Warn().Str("id", id).Str("addr", b.Addr).Err(err).Int("failures", s.failed).Msg("backend down")
	default:
		e := p.log.Info().Str("id", id).Str("addr", b.Addr).Int("successes", s.ok)
		if slow := p.ring.Config().SlowStart; slow > 0 {
			e = e.Dur("slow_start", slow).Str("weight", "10%, rising")
		}
		e.Msg("backend up")
	}
}

// shortage logs a probe lb could not make for want of its own resources, once per episode:
// until a probe is made again.
func (p *Prober) shortage(err error) {
	if !p.short.Swap(true) {
		p.log.Warn().Err(err).Msg("cannot probe: lb is out of descriptors or memory; backends keep their state")
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
	for id := range p.last {
		if !keep[id] {
			delete(p.last, id)
		}
	}
	for id := range p.change {
		if !keep[id] {
			delete(p.change, id)
		}
	}
}

// Probe is the outcome of one probe of a backend, as Last reports it.
type Probe struct {
	At      time.Time     // when the probe ended
	Latency time.Duration // time the dial took, successful or not
	Err     error         // nil: the backend answered
}

// Last returns the latest probe of the backend with this id, and false when it has not been
// probed yet (or is no longer in the ring). Failed dials of the data path are not probes.
func (p *Prober) Last(id string) (Probe, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, ok := p.last[id]
	return pr, ok
}

// record keeps res as the latest probe of its backend, if that is still in the ring. p.mu
// must be held.
func (p *Prober) record(res Result) {
	if localShortage(res.Err) {
		return // not a probe of the backend
	}
	if _, _, ok := p.ring.Lookup(res.Backend.ID); ok {
		p.last[res.Backend.ID] = Probe{At: time.Now(), Latency: res.Latency, Err: res.Err}
	}
	if p.cfg.OnProbe != nil {
		p.cfg.OnProbe(res.Backend.ID, res.Latency)
	}
}

// LastChange returns when the backend with this id last went up or down, and false if it
// has not since lb started.
func (p *Prober) LastChange(id string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.change[id]
	return t, ok
}

// Admit probes backends just added to the ring once, as Init does at start-up, and returns
// when the probes have ended (or ctx is done): those that answered are set up, the others
// down, and both are counted from there. Call it after adding them to the ring down, so a
// backend gets no connection before it has answered.
func (p *Prober) Admit(ctx context.Context, backends []ring.Backend) {
	results := ProbeAllWith(ctx, backends, p.Config())
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, res := range results {
		id := res.Backend.ID
		if _, _, ok := p.ring.Lookup(id); !ok || localShortage(res.Err) {
			continue // removed meanwhile, or not probed: the next round decides
		}
		p.record(res)
		if res.Up {
			p.counts[id] = streak{ok: 1}
			if p.ring.SetUp(id, true) {
				p.log.Info().Str("id", id).Str("addr", res.Backend.Addr).Dur("latency", res.Latency).Msg("backend up")
			}
			continue
		}
		p.counts[id] = streak{failed: 1}
		if p.ring.SetUp(id, false) {
			p.log.Warn().Str("id", id).Str("addr", res.Backend.Addr).Err(res.Err).Msg("backend down")
		}
	}
}

// Result is one probe of one backend. Err is nil exactly when Up is true.
type Result struct {
	Backend ring.Backend
	Up      bool
	Latency time.Duration // time the check took, successful or not
	Status  int           // the HTTP status of an HTTP check that got one; 0 otherwise
	Err     error
}

// ProbeAll checks every backend once over TCP (with the PROXY header of backends that
// take one); see ProbeAllWith.
func ProbeAll(ctx context.Context, backends []ring.Backend, timeout time.Duration) []Result {
	return ProbeAllWith(ctx, backends, Config{Timeout: timeout})
}

// ProbeAllWith checks every backend once as cfg says (its Timeout, HTTPPath, Expect and
// each backend's Check), at most MaxProbes at a time, each bounded by cfg.Timeout and by
// ctx, and returns when all checks have ended. Results are in the order of backends; those
// not checked because ctx ended have ctx's error.
func ProbeAllWith(ctx context.Context, backends []ring.Backend, cfg Config) []Result {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Expect == (StatusRange{}) {
		cfg.Expect = DefaultStatus
	}
	results := make([]Result, len(backends))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(MaxProbes, len(backends)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(backends); i = int(next.Add(1) - 1) {
				if err := ctx.Err(); err != nil {
					results[i] = Result{Backend: backends[i], Err: err}
					continue
				}
				results[i] = probe(ctx, backends[i], cfg)
			}
		})
	}
	wg.Wait()
	return results
}

// MaxProbes bounds the dials under way at once: each holds a descriptor, and a list of
// 100,000 backends must not take them all.
const MaxProbes = 256

// probe checks b once (see check).
func probe(ctx context.Context, b ring.Backend, cfg Config) Result {
	start := time.Now()
	status, err := check(ctx, b, proxyOf(b, cfg.Proxy), checkOf(b, cfg.HTTPPath), cfg.Expect, cfg.Timeout, cfg.Resolver)
	return Result{Backend: b, Latency: time.Since(start), Status: status, Err: err, Up: err == nil}
}

func backendsOf(r *ring.Ring) []ring.Backend {
	snap := r.Snapshot()
	out := make([]ring.Backend, len(snap))
	for i, s := range snap {
		out[i] = s.Backend
	}
	return out
}
