package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"lb/discover"
	"lb/ring"
	"lb/serversfile"
)

var resolverFlag = &cli.StringFlag{Name: "resolver", Usage: "`HOST:PORT` of the DNS server to ask for backend names and discover= lines (e.g. Consul's 127.0.0.1:8600) instead of the system's"}

// useResolver sends every DNS query of lb (backend names, discover= lines, the session
// store's host) to the server at addr; empty leaves the system's. It replaces
// net.DefaultResolver, which every lookup of the process goes through, l4's included.
func useResolver(addr string) error {
	if addr == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return badInput{fmt.Errorf("--resolver %s: want an IP address and port, e.g. 127.0.0.1:8600 or [::1]:53", addr)}
	}
	net.DefaultResolver = discover.Resolver(ap.String())
	return nil
}

// loadServerFile reads the servers file, discover= lines included; every failure is bad input.
func loadServerFile(path string) ([]ring.Backend, []discover.Source, error) {
	f, err := serversfile.LoadFile(path)
	if err != nil {
		return nil, nil, badInput{err}
	}
	sources := make([]discover.Source, len(f.Discover))
	for i, d := range f.Discover {
		sources[i] = discover.Source{Mode: d.Mode, Name: d.Name, Port: d.Port, Weight: d.Weight, Line: d.Line, File: path}
	}
	return f.Backends, sources, nil
}

// startDiscovery looks the discover= lines up once, adding what it finds to r (down, for the
// prober's first round), then follows them until the returned stop is called; stop waits
// for the last lookup. Without discover= lines it does nothing.
func startDiscovery(ctx context.Context, r *ring.Ring, o options) (stop func()) {
	if len(o.discover) == 0 {
		return func() {}
	}
	d := discover.New(r, o.discover, discover.Config{Every: o.l4.ResolveEvery}, o.log)
	n := d.Init(ctx)
	o.log.Info().Int("sources", len(o.discover)).Int("found", n).Msg("backends discovered in DNS")
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(runCtx) })
	return func() { cancel(); wg.Wait() }
}

// withDiscovered returns backends and, after them, every backend the discover= lines find
// now (every SRV priority), for lb probe.
func withDiscovered(ctx context.Context, backends []ring.Backend, sources []discover.Source) ([]ring.Backend, error) {
	if len(sources) == 0 {
		return backends, nil
	}
	r, err := ring.New(backends...)
	if err != nil {
		return nil, badInput{err}
	}
	discover.New(r, sources, discover.Config{}, zerolog.Nop()).Init(ctx)
	out := make([]ring.Backend, 0, r.Len())
	for _, s := range r.Snapshot() {
		out = append(out, s.Backend)
	}
	return out, nil
}
