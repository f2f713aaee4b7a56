package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"lb/admin"
	"lb/config"
	"lb/control"
	"lb/health"
	"lb/l4"
	"lb/metrics"
	"lb/proxyhdr"
	"lb/ring"
)

// pool is one pool of a running lb: its ring and the prober that keeps it.
type pool struct {
	cfg    config.Pool
	ring   *ring.Ring
	prober *health.Prober
	ctl    *control.Control // the admin API's and reloads' changes to the ring
	stop   func()           // stops the prober's rounds and the control's removals
}

// probe starts the prober's rounds and the control's removals; stop ends them and waits.
func (p *pool) probe() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.prober.Run(ctx) })
	wg.Go(func() { p.ctl.Run(ctx) })
	p.stop = func() { cancel(); wg.Wait() }
}

// newPools makes the rings and probers of cfg's pools, with the flags' settings where a
// pool leaves one out.
func newPools(cfg *config.Config, o options, m *metrics.Metrics, traffic func() map[string]control.Traffic) ([]*pool, error) {
	var out []*pool
	for _, p := range cfg.Pools {
		bal, err := ring.ParseBalance(p.Balance)
		if err != nil {
			return nil, badInput{fmt.Errorf("pool %s: balance %q: want %s", p.Name, p.Balance, ring.BalanceNames)}
		}
		r, err := ring.NewWith(ring.Config{Balance: bal, SlowStart: o.ring.SlowStart}, p.Backends...)
		if err != nil {
			return nil, badInput{err}
		}
		hc := o.health
		hc.OnProbe = m.ProbeObserver(p.Name)
		hc.Interval, hc.Timeout, hc.Rise, hc.Fall = p.Health.Interval, p.Health.Timeout, p.Health.Rise, p.Health.Fall
		if p.Health.HTTPPath != "" {
			hc.HTTPPath = p.Health.HTTPPath
		}
		log := o.log
		if len(cfg.Pools) > 1 {
			log = log.With().Str("pool", p.Name).Logger()
		}
		pr := health.NewProber(r, hc, log)
		cc := control.Config{Ring: r, Prober: pr, Pool: p.Name, Traffic: traffic, RemoveAfter: o.drainTimeout, Log: log}
		if cfg.File == "" {
			cc.File = o.servers // the flags' one pool: SIGHUP and --watch reload the servers file
		}
		out = append(out, &pool{cfg: p, ring: r, prober: pr, ctl: control.New(cc)})
	}
	return out, nil
}

// reloadPools makes the pools of next from those running, changing nothing that runs: a
// pool of the same name, balance and health settings keeps its ring, health and
// connections (kept: it takes next's backends once the reload is sure); another is new, and
// is probed once. It returns the pools of next, and those of running it no longer has.
func reloadPools(ctx context.Context, running []*pool, next *config.Config, o options, m *metrics.Metrics, traffic func() map[string]control.Traffic) (pools, kept, gone []*pool, err error) {
	byName := map[string]*pool{}
	for _, p := range running {
		byName[p.cfg.Name] = p
	}
	fresh, err := newPools(next, o, m, traffic)
	if err != nil {
		return nil, nil, nil, err
	}
	for i, p := range fresh {
		old := byName[p.cfg.Name]
		if old == nil || old.cfg.Balance != p.cfg.Balance || old.cfg.Health != p.cfg.Health {
			p.prober.Init(ctx)
			continue
		}
		fresh[i] = &pool{cfg: p.cfg, ring: old.ring, prober: old.prober, ctl: old.ctl, stop: old.stop}
		kept = append(kept, fresh[i])
		delete(byName, p.cfg.Name)
	}
	for _, p := range byName {
		gone = append(gone, p)
	}
	return fresh, kept, gone, nil
}

// l4Pool is p as l4 takes it; store serves its learned sessions, if it learns them.
func (p *pool) l4Pool(store *sessionStore) l4.Pool {
	send, _ := proxyhdr.ParseVersion(p.cfg.SendProxy) // checked by config and the flags
	lp := l4.Pool{
		Name: p.cfg.Name, Ring: p.ring, SendProxy: send,
		ConnectTimeout: p.cfg.ConnectTimeout, IdleTimeout: p.cfg.IdleTimeout,
		Sticky:        l4.Sticky{Cookie: p.cfg.StickyCookie, CookieAttrs: p.cfg.StickyCookieAttrs},
		OnDialFailure: func(b ring.Backend) { p.prober.ReportFailure(b.ID) },
	}
	if p.cfg.SessionCookie != "" && store != nil {
		lp.Sticky.SessionCookie, lp.Sticky.Sessions, lp.Sticky.Keyer = p.cfg.SessionCookie, store.Store, store.keyer
	}
	return lp
}

// source is what /metrics reports: l4's counters, and when each backend last changed state,
// which its pool's prober knows (the pools of the last load or reload).
type source struct {
	srv   *l4.Server
	pools *poolBackends
}

func (s source) Collect(snap *metrics.Snapshot) {
	s.srv.Collect(snap)
	for i := range snap.Backends {
		b := &snap.Backends[i]
		for _, p := range *s.pools.pools.Load() {
			if t, ok := p.prober.LastChange(b.ID); ok {
				b.LastChange = t
				break
			}
		}
	}
}

// lazySource is l4's counters once l4 runs; nothing before.
type lazySource struct{ atomic.Pointer[l4.Server] }

func (s *lazySource) Collect(snap *metrics.Snapshot) {
	if srv := s.Load(); srv != nil {
		srv.Collect(snap)
	}
}

// trafficOf is what the admin API shows of each backend's traffic: l4's counters, summed
// over its loops at each call.
func trafficOf(src metrics.Source) func() map[string]control.Traffic {
	return func() map[string]control.Traffic {
		var snap metrics.Snapshot
		src.Collect(&snap)
		out := make(map[string]control.Traffic, len(snap.Backends))
		for _, b := range snap.Backends {
			out[b.ID] = control.Traffic{Connections: b.Connections, BytesIn: b.BytesReceived, BytesOut: b.BytesSent}
		}
		return out
	}
}

// reloaded is what a config reload leaves running.
type reloaded struct {
	cfg   *config.Config
	pools []*pool
}

// reload reads the config file again and applies it: new routes and pools for new
// connections, open ones untouched, pools gone drained (no new connection; their probes
// stop). The listeners must stay the same; a config that does not load, or that changes
// them, changes nothing.
func reload(ctx context.Context, o options, m *metrics.Metrics, srv *l4.Server, store *sessionStore, cur *config.Config, running []*pool, bound []string) (reloaded, error) {
	next, err := config.Load(cur.File, poolDefaults(o))
	if err != nil {
		return reloaded{}, err
	}
	if len(next.Listeners) != len(cur.Listeners) {
		return reloaded{}, fmt.Errorf("%s: the listeners changed: restart lb to change them", cur.File)
	}
	routes := map[string]l4.Routes{}
	for i, l := range next.Listeners {
		if l.Listen != cur.Listeners[i].Listen {
			return reloaded{}, fmt.Errorf("%s:%d: listen %s was %s: restart lb to change the listeners", cur.File, l.Line, l.Listen, cur.Listeners[i].Listen)
		}
		routes[bound[i]] = l4.Routes{Table: l.Table, NoMatchStatus: l.NoMatchStatus}
	}
	pools, kept, gone, err := reloadPools(ctx, running, next, o, m, trafficOf(srv))
	if err != nil {
		return reloaded{}, err
	}
	var l4pools []l4.Pool
	for _, p := range pools {
		l4pools = append(l4pools, p.l4Pool(store))
	}
	if err := srv.Reroute(l4pools, routes); err != nil {
		return reloaded{}, err
	}
	// From here the reload is sure: the pools kept take their servers, new ones start.
	for _, p := range kept {
		if _, err := p.ctl.Apply(ctx, p.cfg.Backends); err != nil {
			o.log.Error().Err(err).Str("pool", p.cfg.Name).Msg("config reload: the pool's servers were not all applied")
		}
	}
	for _, p := range pools {
		if p.stop == nil {
			p.probe()
		}
	}
	for _, p := range gone {
		p.stop()
	}
	return reloaded{next, pools}, nil
}

// fileSum is the hash of a file's content; zero when it cannot be read.
func fileSum(path string) [sha256.Size]byte {
	data, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}
	}
	return sha256.Sum256(data)
}

// poolBackends is the admin API over every pool, as the last load or reload made them. An
// id names the backend of the first pool that has it; POST /backends adds to the first pool.
type poolBackends struct{ pools atomic.Pointer[[]*pool] }

var _ admin.Backends = (*poolBackends)(nil)

func (pb *poolBackends) List() []admin.Backend {
	var out []admin.Backend
	for _, p := range *pb.pools.Load() {
		out = append(out, p.ctl.List()...)
	}
	return out
}

func (pb *poolBackends) Add(b ring.Backend) error { return (*pb.pools.Load())[0].ctl.Add(b) }

func (pb *poolBackends) Drain(id string) bool {
	return pb.first(func(c *control.Control) bool { return c.Drain(id) })
}

func (pb *poolBackends) Enable(id string) bool {
	return pb.first(func(c *control.Control) bool { return c.Enable(id) })
}

func (pb *poolBackends) SetWeight(id string, w int) bool {
	return pb.first(func(c *control.Control) bool { return c.SetWeight(id, w) })
}

func (pb *poolBackends) Remove(id string) bool {
	return pb.first(func(c *control.Control) bool { return c.Remove(id) })
}

// first applies do to the pools' controls in turn, until one has the backend.
func (pb *poolBackends) first(do func(*control.Control) bool) bool {
	for _, p := range *pb.pools.Load() {
		if do(p.ctl) {
			return true
		}
	}
	return false
}
