//go:build linux

package l4

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"lb/ring"
)

// Backend names (app.internal:8080) are looked up off the loops: a lookup can take seconds,
// and a loop waiting for one would stall every connection it owns. Loops dial the last
// address found. Each name is looked up again every ResolveEvery, so a backend that moves is
// followed; a name whose lookup fails keeps its last address and is retried after
// resolveRetry, doubling up to ResolveEvery, never once per connection. A name with several
// addresses is one backend: lb dials one of them, and the next when a dial fails.

// lookupIP is the DNS lookup; a test replaces it.
var lookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

const (
	defaultResolveEvery = 30 * time.Second
	resolveRetry        = time.Second
	lookupTimeout       = 5 * time.Second
	firstLookupWait     = 2 * time.Second // New waits this long for the ring's names
)

var errUnresolved = errors.New("backend name not resolved yet")

// dialAddr is where one backend address, as configured, is dialed.
type dialAddr struct {
	addr string // host:port as configured
	host string // empty for an IP address, which is never looked up
	port uint16
	sa   atomic.Pointer[sockaddr] // nil until the name first resolves
	err  atomic.Pointer[error]    // why the last lookup failed; nil after a success
	ip   netip.Addr               // the address sa holds

	gone atomic.Bool // the resolver forgot it (an IP address no ring has): loops drop it too

	// Guarded by resolver.mu.
	absent  bool         // in no ring at the last look: forgotten if still so at the next
	ips     []netip.Addr // the last lookup's answers, in the order dials move through them
	due     time.Time
	retry   time.Duration
	busy    bool          // a lookup is in flight
	settled chan struct{} // closed after the first lookup
}

// dialable returns the address to dial, or why there is none.
func (d *dialAddr) dialable() (*sockaddr, error) {
	if sa := d.sa.Load(); sa != nil {
		return sa, nil
	}
	if err := d.err.Load(); err != nil {
		return nil, *err
	}
	return nil, errUnresolved
}

type resolver struct {
	every   time.Duration
	rings   []*ring.Ring // under mu: names no longer in one are not looked up; none: every name is
	log     zerolog.Logger
	kick    chan struct{}
	ctx     context.Context // canceled by stop: lookups in flight give up
	cancel  context.CancelFunc
	done    chan struct{} // run has returned
	lookups sync.WaitGroup

	mu    sync.Mutex
	addrs map[string]*dialAddr
}

func newResolver(every time.Duration, rings []*ring.Ring, log zerolog.Logger) *resolver {
	if every <= 0 {
		every = defaultResolveEvery
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &resolver{every: every, rings: rings, log: log, kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), addrs: map[string]*dialAddr{}}
	go r.run()
	return r
}

// addr returns the dialAddr of a backend address, creating it on first use; a new name is
// looked up at once, in the background.
func (r *resolver) addr(addr string) *dialAddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.addrs[addr]; d != nil {
		return d
	}
	d := &dialAddr{addr: addr, settled: make(chan struct{})}
	r.addrs[addr] = d
	host, port, err := net.SplitHostPort(addr)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err == nil && (perr != nil || p == 0) {
		err = errors.New("bad port in backend address " + addr)
	}
	ip, iperr := netip.ParseAddr(host)
	if _, ok := scopeID(ip.Zone()); err == nil && iperr == nil && !ok {
		err = errors.New("no interface " + ip.Zone() + " for backend address " + addr)
	}
	switch {
	case err != nil:
		d.err.Store(&err)
		close(d.settled)
		return d
	case iperr == nil: // an IP address: never looked up
		d.ip, d.port = ip.Unmap(), uint16(p)
		d.sa.Store(newSockaddr(netip.AddrPortFrom(d.ip, d.port)))
		close(d.settled)
		return d
	}
	d.port = uint16(p)
	d.host = host
	r.wake()
	return d
}

// wake has run look at the names again now.
func (r *resolver) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// waitSettled waits until every name in addrs had its first lookup, or until wait passes.
func (r *resolver) waitSettled(addrs []*dialAddr, wait time.Duration) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for _, d := range addrs {
		select {
		case <-d.settled:
		case <-timer.C:
			return
		}
	}
}

// run starts the lookups that are due, until stop.
func (r *resolver) run() {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := r.startDue(time.Now())
		timer.Reset(next)
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		case <-timer.C:
		}
	}
}

// startDue starts a lookup of every name that is due and returns the wait until the next.
func (r *resolver) startDue(now time.Time) time.Duration {
	var inRing map[string]bool
	r.mu.Lock()
	rings := r.rings
	r.mu.Unlock()
	if len(rings) > 0 {
		inRing = map[string]bool{}
		for _, rg := range rings {
			for _, b := range rg.Snapshot() {
				inRing[b.Addr] = true
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.every
	for key, d := range r.addrs {
		if d.host == "" && inRing != nil && !inRing[d.addr] {
			// An IP address in no ring, at two looks in a row (so not one just added): it is
			// forgotten, by the loops too, so that addresses that come and go (pods found in
			// DNS) do not pile up. If it comes back, it is a new entry, made at once.
			if d.absent {
				delete(r.addrs, key)
				d.gone.Store(true)
			}
			d.absent = true
			continue
		}
		d.absent = false
		switch {
		case d.host == "" || d.busy:
		case inRing != nil && !inRing[d.addr]:
			// A name removed from the ring: no queries for it. Its entry stays: if the name
			// comes back, it is looked up again within every, and dialed at its last address.
		case !now.Before(d.due):
			d.busy = true
			r.lookups.Add(1)
			go r.lookup(d)
		default:
			next = min(next, d.due.Sub(now))
		}
	}
	return next
}

func (r *resolver) lookup(d *dialAddr) {
	defer r.lookups.Done()
	ctx, cancel := context.WithTimeout(r.ctx, lookupTimeout)
	ips, err := lookupIP(ctx, d.host)
	cancel()
	if err != nil && r.ctx.Err() != nil {
		return // stopping: not the name's fault
	}
	// Logged after the lock is let go: a loop may be waiting for it, and a log write can block.
	if ev, msg := r.record(d, ips, err); ev != nil {
		ev.Str("addr", d.addr).Msg(msg)
	}
	r.wake() // run's timer did not count this name while its lookup was under way
}

// record stores the outcome of a lookup of d and returns the log line it calls for, if any.
// It picks the address to dial under the lock: a failed dial (dialFailed) may have moved it.
func (r *resolver) record(d *dialAddr, ips []netip.Addr, err error) (ev *zerolog.Event, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ip netip.Addr
	if err == nil {
		if ip = choose(ips, d.ip); !ip.IsValid() {
			err = errors.New("no address for " + d.host)
		}
	}
	d.busy = false
	first := d.sa.Load() == nil && d.err.Load() == nil
	if first {
		defer close(d.settled)
	}
	if err != nil {
		switch {
		case d.err.Load() != nil: // reported when the failures began
		case d.ip.IsValid():
			ev, msg = r.log.Warn().Err(err).Stringer("dialing", d.ip), "cannot resolve backend; dialing its last address"
		default:
			ev, msg = r.log.Warn().Err(err), "cannot resolve backend; it gets no connections until it resolves"
		}
		d.err.Store(&err)
		d.retry = min(max(2*d.retry, resolveRetry), r.every)
		d.due = time.Now().Add(d.retry)
		return ev, msg
	}
	switch {
	case d.err.Load() != nil:
		ev, msg = r.log.Info().Stringer("ip", ip), "backend resolves again"
	case !first && ip != d.ip:
		ev, msg = r.log.Info().Stringer("from", d.ip).Stringer("to", ip), "backend address changed"
	}
	d.ips = ips
	r.dialTo(d, ip)
	d.err.Store(nil)
	d.retry = 0
	d.due = time.Now().Add(r.every)
	return ev, msg
}

func (r *resolver) dialTo(d *dialAddr, ip netip.Addr) {
	if ip != d.ip {
		d.ip = ip
		d.sa.Store(newSockaddr(netip.AddrPortFrom(ip, d.port)))
	}
}

// dialFailed hears from a loop that a dial to sa, an address of d, failed: a name with other
// addresses moves on to the next one, so that one dead address of several does not take the
// backend down. Called on a loop: it only takes the lock.
func (r *resolver) dialFailed(d *dialAddr, sa *sockaddr) {
	if d == nil || d.host == "" { // nil: forgotten since the dial
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if d.sa.Load() != sa || len(d.ips) < 2 {
		return // another dial moved it already, or there is nowhere else to go
	}
	i := slices.Index(d.ips, d.ip)
	r.dialTo(d, d.ips[(i+1)%len(d.ips)])
}

// choose picks the address to dial among a lookup's answers: the one dialed now if it is
// still there (round-robin DNS reorders answers; lb balances by itself), else the first
// IPv4 one, as Go's dialer prefers, else the first. It unmaps ips in place.
func choose(ips []netip.Addr, current netip.Addr) netip.Addr {
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	if current.IsValid() && slices.Contains(ips, current) {
		return current
	}
	for _, ip := range ips {
		if ip.Is4() {
			return ip
		}
	}
	if len(ips) > 0 {
		return ips[0]
	}
	return netip.Addr{}
}

// stop ends the lookups and returns when none runs any more.
func (r *resolver) stop() {
	r.cancel()
	<-r.done
	r.lookups.Wait()
}

// setRings makes rings the ones whose names are looked up.
func (r *resolver) setRings(rings []*ring.Ring) {
	r.mu.Lock()
	r.rings = rings
	r.mu.Unlock()
	r.wake()
}

// dialCache is a loop's view of the resolver: the entries its connections have dialed, by
// the address as configured, so a dial looks no name up and takes no lock.
type dialCache struct {
	r     *resolver
	addrs map[string]*dialAddr
}

// connect starts connecting a new socket to addr, at the address its name last resolved to,
// which it returns for failed.
func (dc *dialCache) connect(addr string) (int, *sockaddr, error) {
	d := dc.addrs[addr]
	if d == nil {
		d = dc.r.addr(addr)
		dc.addrs[addr] = d
	}
	sa, err := d.dialable()
	if err != nil {
		return -1, nil, err
	}
	fd, err := sysDial(sa)
	return fd, sa, err
}

// prune drops the entries the resolver forgot.
func (dc *dialCache) prune() {
	for addr, d := range dc.addrs {
		if d.gone.Load() {
			delete(dc.addrs, addr)
		}
	}
}

// failed tells the resolver that a dial of addr at sa failed: a name with several addresses
// moves on to the next.
func (dc *dialCache) failed(addr string, sa *sockaddr) {
	dc.r.dialFailed(dc.addrs[addr], sa)
}
