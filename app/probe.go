package app

import (
	"context"
	"net"

	"github.com/rs/zerolog"

	"lb/config"
	"lb/discover"
	"lb/health"
	"lb/ring"
)

// PoolResult is one probe of one backend of a pool.
type PoolResult struct {
	Pool string
	health.Result
}

// Probe checks every backend of cfg's pools once, as lb serve's probers would: each pool's
// check (TCP, or HTTP wanting a status in expect), its PROXY header, its timeout, and the
// backends its discover= lines find now, names looked up through resolver (nil: the
// system's). A backend in two pools is probed for each.
func Probe(ctx context.Context, cfg *config.Config, expect health.StatusRange, resolver *net.Resolver) []PoolResult {
	var out []PoolResult
	for _, pc := range cfg.Pools {
		backends := pc.Backends
		if len(pc.Discover) > 0 {
			r, err := ring.New(pc.Backends...)
			if err == nil {
				discover.New(r, sourcesOf(pc), discover.Config{Resolver: resolver}, zerolog.Nop()).Init(ctx)
				backends = backends[:0:0]
				for _, s := range r.Snapshot() {
					backends = append(backends, s.Backend)
				}
			}
		}
		h := pc.Health
		hc := health.Config{Timeout: h.Timeout, HTTPPath: h.HTTPPath, Expect: expect, Proxy: pc.SendProxy, Resolver: resolver}
		for _, r := range health.ProbeAllWith(ctx, backends, hc) {
			out = append(out, PoolResult{Pool: pc.Name, Result: r})
		}
	}
	return out
}
