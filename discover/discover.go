// Package discover finds backends in DNS and keeps a ring.Ring in step with what DNS says:
// every A/AAAA address of a name (a Kubernetes headless Service's pods), or the targets of
// an SRV name (Consul, Kubernetes named ports).
//
// It runs off the data path: a dnswatch.Watcher looks names up on its own goroutines, and
// the ring changes through Add, AddDown and Remove, which never block a pick. An address that appears is
// added down, for the health prober to bring up; one that vanishes is removed, which drains
// it: picks stop, and connections already open to it finish. A lookup that fails, or finds
// nothing, keeps the last good set and is retried after a second, doubling up to the period.
//
// A backend's id is made from its address (serversfile.AddrID), so the id of a pod stays the
// same across lookups and restarts of lb, and sticky cookies keep naming it.
package discover

import (
	"context"
	"errors"
	"fmt"
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
	"lb/serversfile"
)

// Source is one name to follow. Mode "a": every address of Name, at Port, each with
// Weight. Mode "srv": Name's SRV records give targets, ports, weights and priorities; only
// the lowest priority that has a backend up is used.
type Source struct {
	Mode   string // "a" or "srv"
	Name   string
	Port   int    // mode "a" only
	Weight int    // mode "a" only; below 1 counts as 1
	Line   int    // in the servers file, for logs; 0 if none
	File   string // the servers file, for logs
}

func (s Source) String() string {
	if s.Mode == "a" {
		return net.JoinHostPort(s.Name, strconv.Itoa(s.Port)) + " discover=a"
	}
	return s.Name + " discover=srv"
}

// Config tunes a Discoverer. Zero fields take the defaults shown (dnswatch's for Every,
// Timeout and Resolver).
type Config struct {
	Every    time.Duration // between lookups of a name; default 30s
	Timeout  time.Duration // bound on one name's lookups; default 5s
	Check    time.Duration // how often SRV priorities are checked against the ring; default 1s
	Resolver *net.Resolver // default net.DefaultResolver
}

// Discoverer keeps the backends of its sources in a ring. Init and Run are meant to be
// called once each, Init first, from one goroutine.
type Discoverer struct {
	ring    *ring.Ring
	cfg     Config
	log     zerolog.Logger
	watch   *dnswatch.Watcher[map[string]target]
	sources []*source
	update  chan []Source // SetSources to Run: the latest list wins

	mu    sync.Mutex
	owned map[string]bool // ids of the backends the sources have put in the ring; under mu
}

// source is the state of one Source, touched only by the goroutine that calls Init and Run,
// but for good, which its lookups replace.
type source struct {
	Source
	name  *dnswatch.Name[map[string]target]
	good  atomic.Pointer[map[string]target] // the last good answer, by address (ip:port)
	owned map[string]owned                  // what this source has put in the ring, by address
}

type target struct {
	weight   int
	priority int
}

type owned struct {
	id     string
	weight int
}

// New returns a Discoverer for sources that changes r. It looks nothing up before Init.
func New(r *ring.Ring, sources []Source, cfg Config, log zerolog.Logger) *Discoverer {
	if cfg.Check <= 0 {
		cfg.Check = time.Second
	}
	d := &Discoverer{ring: r, cfg: cfg, log: log, update: make(chan []Source, 1), owned: map[string]bool{}}
	d.watch = dnswatch.New[map[string]target](dnswatch.Config{Every: cfg.Every, Timeout: cfg.Timeout, Resolver: cfg.Resolver})
	for _, s := range sources {
		d.sources = append(d.sources, d.newSource(s))
	}
	return d
}

// newSource watches s's name: each good answer replaces the source's good set.
func (d *Discoverer) newSource(s Source) *source {
	src := &source{Source: s, owned: map[string]owned{}}
	src.good.Store(&map[string]target{})
	what := s.String() // not src's: Run changes its Line and File
	src.name = d.watch.Watch(func(ctx context.Context, r *net.Resolver) (map[string]target, error) {
		return lookup(ctx, r, s)
	}, func(found map[string]target, err error, changed bool) {
		switch {
		case err == nil:
			src.good.Store(&found)
			if changed {
				d.log.Info().Str("source", what).Int("found", len(found)).Msg("discovering backends again")
			}
		case changed:
			d.log.Warn().Err(err).Str("source", what).Int("keeping", len(*src.good.Load())).Msg("cannot discover backends; keeping the last ones found")
		}
	})
	return src
}

// SetSources replaces the sources, as after a reload of the servers file; Run applies the
// latest list at its next check. A source that stays (same mode, name, port and weight)
// keeps its backends and their state; the backends of one that goes are removed from the
// ring (and drain); a new one is looked up at once. Safe to call from any goroutine; it
// never blocks.
func (d *Discoverer) SetSources(sources []Source) {
	for {
		select {
		case d.update <- sources:
			return
		default:
		}
		select {
		case <-d.update: // drop a list Run has not taken yet: this one replaces it
		default:
		}
	}
}

// replace is SetSources, run on Run's goroutine.
func (d *Discoverer) replace(sources []Source) {
	same := func(a, b Source) bool {
		return a.Mode == b.Mode && a.Name == b.Name && a.Port == b.Port && a.Weight == b.Weight
	}
	next := make([]*source, 0, len(sources))
	for _, s := range sources {
		i := slices.IndexFunc(d.sources, func(old *source) bool { return old != nil && same(old.Source, s) })
		if i < 0 {
			next = append(next, d.newSource(s))
			continue
		}
		kept := d.sources[i]
		kept.Line, kept.File = s.Line, s.File
		d.sources[i] = nil
		next = append(next, kept)
	}
	for _, gone := range d.sources {
		if gone == nil {
			continue
		}
		d.watch.Forget(gone.name)
		for addr, o := range gone.owned {
			d.ring.Remove(o.id)
			d.own(o.id, false)
			d.log.Info().Str("id", o.id).Str("addr", addr).Str("source", gone.String()).Msg("backend gone: draining")
		}
	}
	d.sources = next
}

// Init looks every source up once and adds what it finds to the ring, down (every SRV
// priority: the first Run check keeps the lowest one that has a backend up). Call it before
// the prober's first round, which then brings up those that answer. It returns when every
// lookup has ended or ctx is done, and reports how many backends it added.
func (d *Discoverer) Init(ctx context.Context) int {
	d.watch.LookupDue(ctx)
	if ctx.Err() != nil {
		return 0 // stopping: the lookups cut short say nothing of the names
	}
	n := 0
	for _, s := range d.sources {
		d.apply(s)
		n += len(s.owned)
	}
	return n
}

// Run looks sources up again as they fall due and, every Check, brings the ring in step
// with what they found and checks SRV priorities, until ctx is done; it returns once no
// lookup of its own runs.
func (d *Discoverer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { d.watch.Run(ctx) })
	tick := time.NewTicker(d.cfg.Check)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case sources := <-d.update:
			d.replace(sources)
		case <-tick.C:
		}
		for _, s := range d.sources {
			d.apply(s)
		}
	}
}

// errNothing is a lookup that worked and found no address: kept as a failure, so that a DNS
// server restarting empty does not take every backend away.
var errNothing = errors.New("no address found")

// lookup asks r for the backends of s, by address (ip:port).
func lookup(ctx context.Context, r *net.Resolver, s Source) (map[string]target, error) {
	found := map[string]target{}
	if s.Mode == "a" {
		ips, err := r.LookupNetIP(ctx, "ip", s.Name)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			found[netip.AddrPortFrom(ip.Unmap(), uint16(s.Port)).String()] = target{weight: max(1, s.Weight)}
		}
	} else {
		_, srvs, err := r.LookupSRV(ctx, "", "", s.Name)
		if err != nil {
			return nil, err
		}
		for _, srv := range srvs {
			if srv.Target == "." || srv.Port == 0 {
				continue // "no service here" (RFC 2782)
			}
			ips, err := r.LookupNetIP(ctx, "ip", srv.Target)
			if err != nil {
				return nil, fmt.Errorf("SRV target %s: %w", srv.Target, err)
			}
			for _, ip := range ips {
				addr := netip.AddrPortFrom(ip.Unmap(), srv.Port).String()
				t := target{weight: max(1, int(srv.Weight)), priority: int(srv.Priority)}
				if old, dup := found[addr]; dup && old.priority < t.priority {
					continue // two targets, one address: the better priority holds
				}
				found[addr] = t
			}
		}
	}
	if len(found) == 0 {
		return nil, errNothing
	}
	return found, nil
}

// apply adds to the ring what s should have there and is missing, and removes what it has
// there and should not: for SRV, the priorities up to the lowest with a backend up (all of
// them while none is up, so that every one gets probed).
func (d *Discoverer) apply(s *source) {
	want := *s.good.Load()
	if s.Mode == "srv" {
		want = d.usable(s, want)
	}
	for addr, o := range s.owned {
		if t, ok := want[addr]; !ok || t.weight != o.weight {
			d.ring.Remove(o.id)
			delete(s.owned, addr)
			d.own(o.id, false)
			if !ok {
				d.log.Info().Str("id", o.id).Str("addr", addr).Str("source", s.String()).Msg("backend gone: draining")
			}
		}
	}
	for _, addr := range sortedKeys(want) {
		if _, ok := s.owned[addr]; ok {
			continue
		}
		id, err := d.add(addr, want[addr].weight)
		if err != nil {
			d.log.Debug().Err(err).Str("addr", addr).Str("source", s.String()).Msg("backend found but not added")
			continue
		}
		s.owned[addr] = owned{id: id, weight: want[addr].weight}
		d.own(id, true)
		d.log.Info().Str("id", id).Str("addr", addr).Str("source", s.String()).Msg("backend found: probing it")
	}
}

// add puts addr in the ring, down, under its short id, or its long one when another
// backend has the short one. An address already in the ring (from the servers file or
// another source) is left to that one: ring.ErrDuplicate.
func (d *Discoverer) add(addr string, weight int) (string, error) {
	id := serversfile.AddrID(addr, false)
	if b, _, taken := d.ring.Lookup(id); taken && b.Addr != addr {
		id = serversfile.AddrID(addr, true)
	}
	return id, d.ring.AddDown(ring.Backend{ID: id, Addr: addr, Weight: weight})
}

// usable is the part of an SRV source's good set to keep in the ring: every priority up to
// and including the lowest that has a backend up, or all of them while none is up.
func (d *Discoverer) usable(s *source, good map[string]target) map[string]target {
	best, found := 0, false
	for addr, t := range good {
		o, ok := s.owned[addr]
		if !ok || (found && t.priority >= best) {
			continue
		}
		if _, up, in := d.ring.Lookup(o.id); in && up {
			best, found = t.priority, true
		}
	}
	if !found {
		return good
	}
	want := make(map[string]target, len(good))
	for addr, t := range good {
		if t.priority <= best {
			want[addr] = t
		}
	}
	return want
}

// Owns reports whether the backend with this id was put in the ring by a source of d (and
// is still there): a reload of the fixed servers leaves it alone. Safe from any goroutine.
func (d *Discoverer) Owns(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.owned[id]
}

func (d *Discoverer) own(id string, yes bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if yes {
		d.owned[id] = true
	} else {
		delete(d.owned, id)
	}
}

func sortedKeys(m map[string]target) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
