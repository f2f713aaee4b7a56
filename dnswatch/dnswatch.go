// Package dnswatch looks names up again and again, off its callers' paths, through one
// *net.Resolver, each lookup under a timeout: every period while a name answers; after a
// failure, which leaves its owner the last good answer, a second later, doubling up to the
// period. A name's owner is told once that its lookups fail and once that they work again.
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
	// BeforeRound, if set, runs at the start of every round, at least once every Every:
	// where an owner pauses the names it needs no more.
	BeforeRound func()
}

// Lookup asks r for a name's answer.
type Lookup[T any] func(ctx context.Context, r *net.Resolver) (T, error)

// Answer hears the outcome of a lookup, unless its owner's stopping cut it short: the owner
// keeps ans when err is nil, and keeps its last good answer when not. changed is true for
// the first failure in a row and for the first success after failures: the ones to log.
// It runs on no lock of the Watcher's.
type Answer[T any] func(ans T, err error, changed bool)

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

// Watcher keeps the names given to Watch looked up: Run as they fall due, LookupDue at once.
// Its methods are safe from any goroutine.
type Watcher[T any] struct {
	cfg     Config
	kick    chan struct{}
	lookups sync.WaitGroup
	mu      sync.Mutex
	names   map[*Name[T]]bool
}

// Name is one name a Watcher looks up.
type Name[T any] struct {
	lookup Lookup[T]
	answer Answer[T]

	// Guarded by the Watcher's mu.
	due                   time.Time
	retry                 time.Duration
	busy, failing, paused bool
}

// New returns a Watcher with no names.
func New[T any](cfg Config) *Watcher[T] {
	cfg.Every = cmp.Or(max(cfg.Every, 0), 30*time.Second)
	cfg.Timeout = cmp.Or(max(cfg.Timeout, 0), 5*time.Second)
	cfg.Resolver = cmp.Or(cfg.Resolver, net.DefaultResolver)
	return &Watcher[T]{cfg: cfg, kick: make(chan struct{}, 1), names: map[*Name[T]]bool{}}
}

// Watch adds a name, due at once: lookup asks for it, answer hears what it found.
func (w *Watcher[T]) Watch(lookup Lookup[T], answer Answer[T]) *Name[T] {
	n := &Name[T]{lookup: lookup, answer: answer}
	w.mu.Lock()
	w.names[n] = true
	w.mu.Unlock()
	w.Wake()
	return n
}

// Forget stops looking n up; a lookup under way ends on its own.
func (w *Watcher[T]) Forget(n *Name[T]) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.names, n)
}

// Pause stops looking n up while paused; resumed, it is looked up at the next round if it
// fell due meanwhile.
func (w *Watcher[T]) Pause(n *Name[T], paused bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n.paused = paused
}

// Refresh makes n due now.
func (w *Watcher[T]) Refresh(n *Name[T]) {
	w.mu.Lock()
	n.due = time.Time{}
	w.mu.Unlock()
	w.Wake()
}

// Busy reports whether a lookup of n is under way, its answer included.
func (w *Watcher[T]) Busy(n *Name[T]) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return n.busy
}

// Wake has Run start a round now.
func (w *Watcher[T]) Wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run looks names up as they fall due, until ctx is done, which cuts the lookups under way
// short (they say nothing of their names); it returns once none runs any more.
func (w *Watcher[T]) Run(ctx context.Context) {
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
func (w *Watcher[T]) LookupDue(ctx context.Context) {
	w.start(ctx, time.Now())
	w.lookups.Wait()
}

// start starts a lookup of every name that is due and returns the wait until the next.
func (w *Watcher[T]) start(ctx context.Context, now time.Time) time.Duration {
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
			w.lookups.Go(func() { w.look(ctx, n) })
		default:
			next = min(next, n.due.Sub(now))
		}
	}
	return next
}

func (w *Watcher[T]) look(ctx context.Context, n *Name[T]) {
	defer w.Wake() // Run's timer did not count this name while its lookup was under way
	defer func() {
		w.mu.Lock()
		n.busy = false // only now: two answers of one name never overlap
		w.mu.Unlock()
	}()
	lctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	ans, err := n.lookup(lctx, w.cfg.Resolver)
	cancel()
	if err != nil && ctx.Err() != nil {
		return // stopping: not the name's fault
	}
	w.mu.Lock()
	changed := err != nil != n.failing
	var retry time.Duration // none after a success: the next lookup is in Every
	if err != nil {
		retry = min(max(2*n.retry, FirstRetry), w.cfg.Every)
	}
	n.failing, n.retry, n.due = err != nil, retry, time.Now().Add(cmp.Or(retry, w.cfg.Every))
	w.mu.Unlock()
	n.answer(ans, err, changed)
}
