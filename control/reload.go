package control

import (
	"context"

	"lb/ring"
)

// Changes counts what a reload did.
type Changes struct {
	Added, Removed, Reweighted, Unchanged int
}

// Apply makes the ring the backends of want, as after a reload of the pool's servers:
//   - a backend with the same id, address, PROXY version and check keeps its state (drained
//     stays drained), health and connections, and takes want's weight and maxconn;
//   - any other backend of the ring is removed (drained: no new connection goes to it once
//     Apply returns, and its open connections finish), but for those Config.Discovered owns;
//   - a backend of want not kept starts down and is probed before Apply returns: up if it
//     answered, otherwise after the prober's Rise good probes. A backend whose address or
//     options changed under the same id is so replaced: the old one drains.
func (c *Control) Apply(ctx context.Context, want []ring.Backend) (Changes, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apply(ctx, want)
}

// apply is Apply with c.mu held.
func (c *Control) apply(ctx context.Context, want []ring.Backend) (Changes, error) {
	have := map[string]ring.Backend{}
	for _, s := range c.cfg.Ring.Snapshot() {
		have[s.ID] = s.Backend
	}
	var ch Changes
	var added []ring.Backend
	keep := map[string]bool{}
	for _, b := range want {
		old, ok := have[b.ID]
		switch {
		case !ok || !sameServer(old, b):
			added = append(added, b)
		case old.Weight != b.Weight || old.MaxConn != b.MaxConn:
			c.cfg.Ring.SetWeight(b.ID, b.Weight)
			c.cfg.Ring.SetMaxConn(b.ID, b.MaxConn)
			ch.Reweighted++
			keep[b.ID] = true
		default:
			ch.Unchanged++
			keep[b.ID] = true
		}
		if keep[b.ID] {
			delete(c.removing, b.ID) // the file wins: a backend it lists stays (draining)
		}
	}
	// Removals first: a backend whose address or id moved to another line frees them for it.
	for id := range have {
		if !keep[id] && (c.cfg.Discovered == nil || !c.cfg.Discovered(id)) {
			c.cfg.Ring.SetState(id, ring.Draining)
			c.cfg.Ring.Remove(id)
			delete(c.removing, id)
			ch.Removed++
		}
	}
	for _, b := range added {
		if err := c.addDown(b); err != nil {
			// Parse checked the file for duplicates and every other backend is gone: this is a bug.
			return ch, err
		}
		ch.Added++
	}
	if len(added) > 0 {
		c.cfg.Prober.Admit(ctx, added)
	}
	return ch, nil
}

// sameServer reports whether a and b are one server to lb: the same address, spoken to
// the same way (PROXY version, health check). Weight and maxconn change in place.
func sameServer(a, b ring.Backend) bool {
	return a.Addr == b.Addr && a.Proxy == b.Proxy && a.Check == b.Check
}
