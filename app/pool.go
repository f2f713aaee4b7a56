package app

import (
	"context"
	"sync"

	"github.com/rs/zerolog"

	"lb/config"
	"lb/control"
	"lb/discover"
	"lb/health"
	"lb/l4"
	"lb/proxyhdr"
	"lb/ring"
)

// pool is one pool of a running lb: its ring, the prober and the discovery that keep it,
// and the control that the admin API and reloads change it through.
type pool struct {
	cfg    config.Pool
	ring   *ring.Ring
	prober *health.Prober
	disc   *discover.Discoverer // follows the pool's discover= lines; none: it does nothing
	ctl    *control.Control
	log    zerolog.Logger
	stop   func() // ends the prober's rounds, discovery and the control's removals, and waits
}

// newPool builds the pool cfg describes; it probes nothing before init.
func (a *App) newPool(cfg config.Pool, named bool) (*pool, error) {
	bal, err := ring.ParseBalance(cfg.Balance)
	if err != nil {
		return nil, InputError{err} // config checked it: a pool of the flags with a bad --balance
	}
	r, err := ring.NewWith(ring.Config{Balance: bal, SlowStart: a.o.SlowStart}, cfg.Backends...)
	if err != nil {
		return nil, InputError{err}
	}
	log := a.log
	if named {
		log = log.With().Str("pool", cfg.Name).Logger()
	}
	p := &pool{cfg: cfg, ring: r, log: log}
	p.prober = health.NewProber(r, a.healthOf(cfg), log)
	p.disc = discover.New(r, sourcesOf(cfg), discover.Config{Every: a.o.L4.ResolveEvery, Resolver: a.o.Resolver}, log)
	p.ctl = control.New(control.Config{
		Ring: r, Prober: p.prober, Pool: cfg.Name, Traffic: a.traffic, RemoveAfter: a.o.DrainTimeout,
		Discovered: p.disc.Owns, Log: log,
	})
	return p, nil
}

// healthOf is how the backends of pool cfg are probed: its health settings, and the PROXY
// header its data path sends, so that a backend behind PROXY protocol is probed as it is
// spoken to.
func (a *App) healthOf(cfg config.Pool) health.Config {
	h := cfg.Health
	return health.Config{
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
		HTTPPath: h.HTTPPath, Expect: a.o.Expect, Proxy: cfg.SendProxy, OnProbe: a.metrics.ProbeObserver(cfg.Name),
		Resolver: a.o.Resolver,
	}
}

// sourcesOf is the pool's discover= lines as discovery follows them.
func sourcesOf(cfg config.Pool) []discover.Source {
	out := make([]discover.Source, len(cfg.Discover))
	for i, d := range cfg.Discover {
		out[i] = discover.Source{Mode: d.Mode, Name: d.Name, Port: d.Port, Weight: d.Weight, Line: d.Line, File: cfg.ServersFrom}
	}
	return out
}

// init discovers the pool's backends in DNS and probes every backend once, so that its
// first connections go to backends that answered.
func (p *pool) init(ctx context.Context) {
	if len(p.cfg.Discover) > 0 {
		n := p.disc.Init(ctx)
		p.log.Info().Int("sources", len(p.cfg.Discover)).Int("found", n).Msg("backends discovered in DNS")
	}
	p.prober.Init(ctx)
}

// run starts the pool's probes, discovery and removals; stop ends them.
func (p *pool) run() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.prober.Run(ctx) })
	wg.Go(func() { p.ctl.Run(ctx) })
	wg.Go(func() { p.disc.Run(ctx) })
	p.stop = func() { cancel(); wg.Wait() }
}

// update makes the running pool p what next says, keeping what still applies: the ring
// takes next's balancing, the prober its health settings, discovery its discover= lines,
// and the ring its servers (control.Apply: a backend that stays the same keeps its state
// and connections). It returns what the servers' change did.
func (p *pool) update(ctx context.Context, a *App, next config.Pool) (control.Changes, error) {
	bal, _ := ring.ParseBalance(next.Balance) // newPool refused a bad one before any update
	p.ring.SetConfig(ring.Config{Balance: bal, SlowStart: a.o.SlowStart})
	p.prober.Reconfigure(a.healthOf(next))
	p.disc.SetSources(sourcesOf(next))
	return p.ctl.Apply(ctx, next.Backends)
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
