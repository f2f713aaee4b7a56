// Package dnswatch looks names up again and again, off its callers' paths, through one
// *net.Resolver: every period while a name answers; after a failure, which leaves its owner
// the last good answer, a second later, doubling up to the period. Each lookup is bounded
// by a timeout. A name's owner hears once when its lookups start failing and once when
// they work again, never once per lookup.
package dnswatch

import (
	"cmp"
	"context"
	"net"
	"sync"
	"time"
)

// FirstRetry is the wait before a failed name is looked up again; it doubles with every
// failure in a row, up to Config.Every.
const FirstRetry = time.Second

// Config tunes a Watcher. Zero fields take the defaults shown.
type Config struct {
	Every    time.Duration // between lookups of a name that answers; default 30s
	Timeout  time.Duration // bound on one lookup; default 5s
	Resolver *net.Resolver // every lookup goes through it; default net.DefaultResolver
	// BeforeRound, if set, runs at the start of every round of Run, at least once every
	// Every: where an owner pauses the names it needs no more. It must not call Watch.
	BeforeRound func()
}

// Lookup looks a name up through r and keeps the answer. On an error it keeps nothing, so
// that its owner still has the last good answer.
type Lookup func(ctx context.Context, r *net.Resolver) error

// Report hears, once each, that a name's lookups started failing (err) and that they work
// again (nil). It runs on no lock of the Watcher's.
type Report func(err error)

// Resolver returns a resolver that sends every query to the DNS server at addr (host:port,
// e.g. Consul's 127.0.0.1:8600), over UDP or, for long answers, TCP.
func Resolver(addr string) *net.Resolver {
	var dialer net.Dialer
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
	}
}

// Watcher keeps the names given to Watch looked up. Run looks them up as they fall due;
// LookupDue does a round at once.
type Watcher struct {
	cfg     Config
	kick    chan struct{}
	lookups sync.WaitGroup

	mu    sync.Mutex
	names map[*Name]bool
}

// Name is one name a Watcher looks up.
type Name struct {
	lookup  Lookup
	report  Report
	settled chan struct{} // closed once the first lookup has ended

	// Guarded by the Watcher's mu.
	due     time.Time
	retry   time.Duration
	busy    bool // a lookup is under way
	failing bool
	paused  bool
}

// New returns a Watcher with no names; it looks nothing up before Run or LookupDue.
func New(cfg Config) *Watcher {
	if cfg.Every <= 0 {
		cfg.Every = 30 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	return &Watcher{cfg: cfg, kick: make(chan struct{}, 1), names: map[*Name]bool{}}
}

// Watch adds a name, due at once; report may be nil. Safe from any goroutine.
func (w *Watcher) Watch(lookup Lookup, report Report) *Name {
	n := &Name{lookup: lookup, report: report, settled: make(chan struct{})}
	w.mu.Lock()
	w.names[n] = true
	w.mu.Unlock()
	w.Wake()
	return n
}

// Forget stops looking n up; a lookup under way ends on its own.
func (w *Watcher) Forget(n *Name) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.names, n)
}

// Pause stops looking n up while paused is true; resumed, it is looked up at the next round
// if it fell due meanwhile.
func (w *Watcher) Pause(n *Name, paused bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n.paused = paused
}

// Refresh makes n due now.
func (w *Watcher) Refresh(n *Name) {
	w.mu.Lock()
	n.due = time.Time{}
	w.mu.Unlock()
	w.Wake()
}

// Busy reports whether a lookup of n is under way.
func (w *Watcher) Busy(n *Name) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return n.busy
}

// Settled is closed once n's first lookup has ended, found or not.
func (n *Name) Settled() <-chan struct{} { return n.settled }

// WaitSettled waits until every name in names had its first lookup, or until wait passes.
func WaitSettled(names []*Name, wait time.Duration) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for _, n := range names {
		select {
		case <-n.settled:
		case <-timer.C:
			return
		}
	}
}

// Wake has Run start a round now.
func (w *Watcher) Wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run looks names up as they fall due, until ctx is done; it returns once no lookup it
// started runs any more. Lookups under way when ctx ends are cut short and say nothing of
// their names.
func (w *Watcher) Run(ctx context.Context) {
	defer w.lookups.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(w.start(ctx, time.Now()))
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-timer.C:
		}
	}
}

// LookupDue looks up every name that is due, concurrently, and returns when those lookups
// have ended, which ctx can hasten.
func (w *Watcher) LookupDue(ctx context.Context) {
	w.start(ctx, time.Now())
	w.lookups.Wait()
}

// start starts a lookup of every name that is due and returns the wait until the next.
func (w *Watcher) start(ctx context.Context, now time.Time) time.Duration {
	if w.cfg.BeforeRound != nil {
		w.cfg.BeforeRound()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	next := w.cfg.Every
	for n := range w.names {
		switch {
		case n.busy || n.paused:
		case !now.Before(n.due):
			n.busy = true
			w.lookups.Add(1)
			go w.look(ctx, n)
		default:
			next = min(next, n.due.Sub(now))
		}
	}
	return next
}

func (w *Watcher) look(ctx context.Context, n *Name) {
	defer w.lookups.Done()
	lctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	err := n.lookup(lctx, w.cfg.Resolver)
	cancel()
	if err != nil && ctx.Err() != nil {
		w.mu.Lock()
		n.busy = false
		w.mu.Unlock()
		return // stopping: not the name's fault
	}
	w.mu.Lock()
	n.busy = false
	changed := err != nil != n.failing
	n.failing = err != nil
	var retry time.Duration // 0 after a success: the next lookup is in Every
	if err != nil {
		retry = min(max(2*n.retry, FirstRetry), w.cfg.Every)
	}
	n.retry, n.due = retry, time.Now().Add(cmp.Or(retry, w.cfg.Every))
	w.mu.Unlock()
	select {
	case <-n.settled:
	default:
		close(n.settled)
	}
	if changed && n.report != nil {
		n.report(err)
	}
	w.Wake() // Run's timer did not count this name while its lookup was under way
}
