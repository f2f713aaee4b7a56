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

	"lb/dnswatch"
	"lb/ring"
)

// Backend names (app.internal:8080) are looked up off the loops, by a dnswatch.Watcher: a
// lookup can take seconds, and a loop waiting for one would stall every connection it owns.
// Loops dial the last address found. Each name is looked up again every ResolveEvery, so a
// backend that moves is followed; a name whose lookup fails keeps its last address and is
// retried after dnswatch.FirstRetry, doubling up to ResolveEvery, never once per connection.
// A name with several addresses is one backend: lb dials one of them, and the next when a
// dial fails.

// lookupIP is the DNS lookup; a test replaces it.
var lookupIP = func(ctx context.Context, r *net.Resolver, host string) ([]netip.Addr, error) {
	return r.LookupNetIP(ctx, "ip", host)
}

const firstLookupWait = 2 * time.Second // New waits this long at most for the rings' names

var errUnresolved = errors.New("backend name not resolved yet")

// dialAddr is where one backend address, as configured, is dialed.
type dialAddr struct {
	addr string // host:port as configured
	host string // empty for an IP address, which is never looked up
	port uint16
	sa   atomic.Pointer[sockaddr]     // nil until the name first resolves
	err  atomic.Pointer[error]        // why the last lookup failed; nil after a success
	name *dnswatch.Name[[]netip.Addr] // nil for an IP address

	gone atomic.Bool // the resolver forgot it (an IP address no ring has): loops drop it too

	// Guarded by resolver.mu.
	ip     netip.Addr   // the address sa holds
	absent bool         // in no ring at the last look: forgotten if still so at the next
	ips    []netip.Addr // the last lookup's answers, in the order dials move through them
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
	watch *dnswatch.Watcher[[]netip.Addr]
	log   zerolog.Logger
	stop  func() // ends the lookups and returns when none runs any more

	mu    sync.Mutex
	rings []*ring.Ring // names no longer in one are not looked up; none: every name is
	addrs map[string]*dialAddr
}

// newResolver returns a resolver whose lookups run until stop. It looks up the names in
// rings first, and waits firstLookupWait at most for them.
func newResolver(cfg dnswatch.Config, rings []*ring.Ring, log zerolog.Logger) *resolver {
	r := &resolver{rings: rings, log: log, addrs: map[string]*dialAddr{}}
	cfg.BeforeRound = r.sweep
	r.watch = dnswatch.New[[]netip.Addr](cfg)
	for _, rg := range rings {
		for _, b := range rg.Snapshot() {
			r.addr(b.Addr)
		}
	}
	first, cancel := context.WithTimeout(context.Background(), firstLookupWait)
	r.watch.LookupDue(first) // a lookup it cuts short is not a failure: Run starts it again
	cancel()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.watch.Run(ctx) })
	r.stop = func() { cancel(); wg.Wait() }
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
	d := &dialAddr{addr: addr}
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
	case iperr == nil: // an IP address: never looked up
		d.ip, d.port = ip.Unmap(), uint16(p)
		d.sa.Store(newSockaddr(netip.AddrPortFrom(d.ip, d.port)))
	default:
		d.port, d.host = uint16(p), host
		d.name = r.watch.Watch(func(ctx context.Context, res *net.Resolver) ([]netip.Addr, error) {
			ips, err := lookupIP(ctx, res, host)
			if err == nil && len(ips) == 0 {
				err = errors.New("no address for " + host)
			}
			return ips, err
		}, func(ips []netip.Addr, err error, changed bool) { r.record(d, ips, err, changed) })
	}
	return d
}

// sweep runs before every round of lookups: names in no ring are paused, and IP addresses
// in none are forgotten.
func (r *resolver) sweep() {
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
	for key, d := range r.addrs {
		out := inRing != nil && !inRing[d.addr]
		switch {
		case d.name != nil:
			// A name removed from the ring: no queries for it. Its entry stays: if the name
			// comes back, it is looked up again within every, and dialed at its last address.
			r.watch.Pause(d.name, out)
		case out && d.absent:
			// An IP address in no ring, at two looks in a row (so not one just added): it is
			// forgotten, by the loops too, so that addresses that come and go (pods found in
			// DNS) do not pile up. If it comes back, it is a new entry, made at once.
			delete(r.addrs, key)
			d.gone.Store(true)
		}
		d.absent = out
	}
}

// record keeps the outcome of a lookup of d and logs what changed. It picks the address
// to dial under the lock: a failed dial (dialFailed) may have moved it.
func (r *resolver) record(d *dialAddr, ips []netip.Addr, err error, changed bool) {
	r.mu.Lock()
	from, ip := d.ip, netip.Addr{}
	if err != nil {
		d.err.Store(&err)
	} else {
		ip, d.ips = choose(ips, d.ip), ips
		r.dialTo(d, ip)
		d.err.Store(nil)
	}
	r.mu.Unlock()
	// Logged after the lock is let go: a loop may be waiting for it, and a log write can block.
	ev, msg := (*zerolog.Event)(nil), ""
	switch {
	case err != nil && !changed: // reported when the failures began
	case err != nil && from.IsValid():
		ev, msg = r.log.Warn().Err(err).Stringer("dialing", from), "cannot resolve backend; dialing its last address"
	case err != nil:
		ev, msg = r.log.Warn().Err(err), "cannot resolve backend; it gets no connections until it resolves"
	case changed:
		ev, msg = r.log.Info().Stringer("ip", ip), "backend resolves again"
	case from.IsValid() && ip != from:
		ev, msg = r.log.Info().Stringer("from", from).Stringer("to", ip), "backend address changed"
	}
	if ev != nil {
		ev.Str("addr", d.addr).Msg(msg)
	}
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

// setRings makes rings the ones whose names are looked up.
func (r *resolver) setRings(rings []*ring.Ring) {
	r.mu.Lock()
	r.rings = rings
	r.mu.Unlock()
	r.watch.Wake()
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
