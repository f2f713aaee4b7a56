package main

import (
	"fmt"

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
}

// newPools makes the rings and probers of cfg's pools, with the flags' settings where a
// pool leaves one out.
func newPools(cfg *config.Config, o options, m *metrics.Metrics) ([]*pool, error) {
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
		hc.OnProbe = m.ObserveProbe
		hc.Interval, hc.Timeout, hc.Rise, hc.Fall = p.Health.Interval, p.Health.Timeout, p.Health.Rise, p.Health.Fall
		if p.Health.HTTPPath != "" {
			hc.HTTPPath = p.Health.HTTPPath
		}
		log := o.log
		if len(cfg.Pools) > 1 {
			log = log.With().Str("pool", p.Name).Logger()
		}
		out = append(out, &pool{cfg: p, ring: r, prober: health.NewProber(r, hc, log)})
	}
	return out, nil
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
// which its pool's prober knows.
type source struct {
	srv   *l4.Server
	pools []*pool
}

func (s source) Collect(snap *metrics.Snapshot) {
	s.srv.Collect(snap)
	for i := range snap.Backends {
		b := &snap.Backends[i]
		for _, p := range s.pools {
			if t, ok := p.prober.LastChange(b.ID); ok {
				b.LastChange = t
				break
			}
		}
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
