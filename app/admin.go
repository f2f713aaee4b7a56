package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	"lb/admin"
	"lb/control"
	"lb/metrics"
	"lb/ring"
)

// adminListeners are the admin and the metrics listener; either may be nil.
type adminListeners struct {
	admin, metrics net.Listener
}

// Close closes both listeners (a unix: socket file goes with its listener).
func (l *adminListeners) Close() error {
	var errs []error
	for _, ln := range []net.Listener{l.admin, l.metrics} {
		if ln != nil {
			errs = append(errs, ln.Close())
		}
	}
	return errors.Join(errs...)
}

// listenAdmin binds the admin and metrics addresses (admin.Listen: host:port or unix:PATH,
// connections capped) through via, which names them admin and metrics; nil when both are
// off. An address that cannot be bound is bad input: the operator fixes the flag.
func listenAdmin(o Admin, via func(name string) admin.Via) (*adminListeners, error) {
	if o.Listen == "" && o.Metrics == "" {
		return nil, nil
	}
	l := &adminListeners{}
	for _, f := range []struct {
		flag, name, addr string
		ln               *net.Listener
	}{{"--admin-listen", "admin", o.Listen, &l.admin}, {"--metrics-listen", "metrics", o.Metrics, &l.metrics}} {
		if f.addr == "" {
			continue
		}
		ln, err := admin.Listen(f.addr, via(f.name))
		if err != nil {
			l.Close()
			return nil, InputError{fmt.Errorf("%s %s: %w (is another process using it? pick another address)", f.flag, f.addr, err)}
		}
		*f.ln = ln
	}
	return l, nil
}

// serveAdmin serves the admin API on the admin listener, and its MetricsHandler on the
// metrics listener, until the returned stop is called; stop waits for them.
func (a *App) serveAdmin(l *adminListeners) (stop func()) {
	var upgrade func() error
	if a.o.Upgrade != nil {
		upgrade = a.Upgrade
	}
	h := admin.New(admin.Config{
		Upgrade:   upgrade,
		Backends:  backends{a},
		Token:     a.o.Admin.Token,
		Stats:     a.stats,
		Metrics:   a.metrics.Handler(),
		Accepting: a.accepting.Load,
		Version:   a.o.Version,
		Log:       a.log,
	})
	var eps []*admin.Endpoint
	if l.admin != nil {
		eps = append(eps, admin.Serve(l.admin, h, a.log))
		a.log.Info().Str("admin_listen", l.admin.Addr().String()).Msg("admin listener: status page, /healthz, /readyz, /backends")
	}
	if l.metrics != nil {
		eps = append(eps, admin.Serve(l.metrics, h.MetricsHandler(), a.log))
		a.log.Info().Str("metrics_listen", l.metrics.Addr().String()).Msg("metrics listener: /metrics, /healthz, /readyz")
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, ep := range eps {
			ep.Shutdown(ctx)
		}
	}
}

// stats is GET /stats from what l4 counts: its counters, and the sniff outcomes and
// refusals its loops count (summed at each call).
func (a *App) stats() admin.Stats {
	st := a.srv.Stats()
	var snap metrics.Snapshot
	a.srv.Collect(&snap)
	sniff := map[string]uint64{"unparsed_at_memory_limit": st.HeadsUnparsed}
	for k := metrics.SniffKind(0); k < metrics.NumSniffKinds; k++ {
		sniff[k.String()] = snap.Sniff[k]
	}
	refused := map[string]uint64{"idle_timeout": st.IdleTimeouts}
	for r := metrics.RefuseReason(0); r < metrics.NumRefuseReasons; r++ {
		refused[r.String()] = snap.Refused[r]
	}
	return admin.Stats{
		Listeners: a.addrs,
		Accepted:  snap.Accepted,
		Active:    st.Active,
		Sniff:     sniff,
		Refused:   refused,
		Counters:  map[string]uint64{"spliced_bytes": st.SplicedBytes},
		Gauges: map[string]int64{
			"max_conns":    st.MaxConns,
			"pipes_in_use": st.PipesInUse,
			"head_bytes":   st.HeadBytes,
		},
		Goroutines: runtime.NumGoroutine(),
	}
}

// traffic is what the admin API shows of each backend's traffic: l4's counters, summed
// over its loops at each call.
func (a *App) traffic() map[string]control.Traffic {
	var snap metrics.Snapshot
	if a.srv != nil {
		a.srv.Collect(&snap)
	}
	out := make(map[string]control.Traffic, len(snap.Backends))
	for _, b := range snap.Backends {
		out[b.ID] = control.Traffic{Connections: b.Connections, BytesIn: b.BytesReceived, BytesOut: b.BytesSent}
	}
	return out
}

// backends is the admin API over every pool of the last load or reload. An id names the
// backend of the first pool that has it; POST /backends adds to the first pool.
type backends struct{ a *App }

var _ admin.Backends = backends{}

func (b backends) List() []control.Backend {
	var out []control.Backend
	for _, p := range *b.a.pools.Load() {
		out = append(out, p.ctl.List()...)
	}
	return out
}

func (b backends) Add(nb ring.Backend) error { return (*b.a.pools.Load())[0].ctl.Add(nb) }

func (b backends) Drain(id string) bool {
	return b.first(func(c *control.Control) bool { return c.Drain(id) })
}

func (b backends) Enable(id string) bool {
	return b.first(func(c *control.Control) bool { return c.Enable(id) })
}

func (b backends) SetWeight(id string, w int) bool {
	return b.first(func(c *control.Control) bool { return c.SetWeight(id, w) })
}

func (b backends) Remove(id string) bool {
	return b.first(func(c *control.Control) bool { return c.Remove(id) })
}

// first applies do to the pools' controls in turn, until one has the backend.
func (b backends) first(do func(*control.Control) bool) bool {
	for _, p := range *b.a.pools.Load() {
		if do(p.ctl) {
			return true
		}
	}
	return false
}
