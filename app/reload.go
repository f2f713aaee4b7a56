package app

import (
	"context"
	"errors"
	"fmt"

	"lb/config"
	"lb/control"
	"lb/l4"
	"lb/serversfile"
)

// Reload reads the configuration again and applies it whole, or not at all: new routes and
// pools for new connections, open connections untouched.
//   - A pool of the same name is kept: its ring takes the new balancing, its prober the new
//     health settings, its discovery the new discover= lines, and its servers are applied
//     (a backend that stays the same keeps its state and connections; one whose address or
//     options changed is replaced, probed, and the old one drains).
//   - A new pool is probed before it takes a connection; a pool that is gone drains.
//   - A file that does not load, or that changes the listeners, changes nothing.
//   - A changed engine: is not applied: the engine that runs stays until a restart or an
//     upgrade (lb upgrade, SIGUSR2), and a warning says so on every reload that asks for
//     another one.
//
// why says what asked for it, for the log ("SIGHUP", "watch"). The outcome is logged.
func (a *App) Reload(why string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.undo == nil {
		return errors.New("lb is shutting down")
	}
	if sum := filesSum(a.files(a.cfg)); why == "watch" && sum == a.loaded {
		return nil // another file of the directory changed
	}
	a.loaded = filesSum(a.files(a.cfg))
	ch, err := a.reload(context.Background())
	if err == nil {
		a.loaded = filesSum(a.files(a.cfg)) // the new config may name other servers files
		if a.watch != nil {
			if err := a.watch.add(a.files(a.cfg)); err != nil {
				a.log.Warn().Err(err).Msg("--watch does not see every servers file: SIGHUP reloads it")
			}
		}
	}
	if err != nil {
		e := a.log.Error().Err(err).Str("why", why)
		var le *serversfile.LineError
		if errors.As(err, &le) {
			e = e.Str("file", le.File).Int("line", le.Line).Str("reason", le.Reason)
		}
		e.Msg("config not reloaded: nothing changed")
		return err
	}
	a.log.Info().Str("why", why).Int("pools", len(a.cfg.Pools)).
		Int("added", ch.Added).Int("removed", ch.Removed).Int("reweighted", ch.Reweighted).Int("unchanged", ch.Unchanged).
		Msg("config reloaded")
	if asked, _ := a.askedEngine(a.cfg); asked != a.engine { // the file was checked as it loaded
		a.log.Warn().Str("why", why).Str("file", a.o.Source.File()).Str("engine", asked.String()).Str("running", a.srv.Engine().String()).
			Msg("engine: changed, not applied: it takes a restart or lb upgrade; the running engine stays")
	}
	return nil
}

// reload is Reload's transaction, under a.mu.
func (a *App) reload(ctx context.Context) (control.Changes, error) {
	var ch control.Changes
	next, err := a.o.Source.Load()
	if err != nil {
		return ch, err
	}
	cur := a.cfg
	if len(next.Listeners) != len(cur.Listeners) {
		return ch, fmt.Errorf("%s: the listeners changed: restart lb to change them", a.o.Source.File())
	}
	routes := map[string]l4.Routes{}
	for i, l := range next.Listeners {
		if l.Listen != cur.Listeners[i].Listen {
			return ch, fmt.Errorf("%s:%d: listen %s was %s: restart lb to change the listeners", a.o.Source.File(), l.Line, l.Listen, cur.Listeners[i].Listen)
		}
		routes[a.addrs[i]] = l4.Routes{Table: l.Table, NoMatchStatus: l.NoMatchStatus}
	}
	store, err := a.openStore(ctx, next)
	if err != nil {
		return ch, err
	}
	a.store = store

	running := map[string]*pool{}
	for _, p := range *a.pools.Load() {
		running[p.cfg.Name] = p
	}
	var pools, fresh []*pool
	type keep struct {
		p    *pool
		next config.Pool
	}
	var kept []keep
	for _, pc := range next.Pools {
		if old := running[pc.Name]; old != nil {
			k := *old // the same ring, prober, discovery and control, under the new settings
			k.cfg = pc
			pools, kept = append(pools, &k), append(kept, keep{&k, pc})
			delete(running, pc.Name)
			continue
		}
		p, err := a.newPool(pc, len(next.Pools) > 1)
		if err != nil {
			return ch, err
		}
		p.init(ctx)
		pools, fresh = append(pools, p), append(fresh, p)
	}
	var l4pools []l4.Pool
	for _, p := range pools {
		l4pools = append(l4pools, p.l4Pool(a.store))
	}
	if err := a.srv.Reroute(l4pools, routes); err != nil {
		return ch, err
	}
	// From here the reload is sure: the pools kept take their settings and servers, new
	// ones start, and those gone stop probing (their connections finish).
	for _, k := range kept {
		c, err := k.p.update(ctx, a, k.next)
		if err != nil {
			k.p.log.Error().Err(err).Msg("config reload: the pool's servers were not all applied")
		}
		ch.Added, ch.Removed, ch.Reweighted, ch.Unchanged = ch.Added+c.Added, ch.Removed+c.Removed, ch.Reweighted+c.Reweighted, ch.Unchanged+c.Unchanged
	}
	for _, p := range fresh {
		p.run()
		ch.Added += p.ring.Len()
	}
	for _, p := range running {
		p.stop()
		a.metrics.ForgetPool(p.cfg.Name)
		ch.Removed += p.ring.Len()
	}
	a.cfg = next
	a.pools.Store(&pools)
	return ch, nil
}
