// Package control changes the backends of a running lb: one at a time through the admin API
// (add, drain, enable, re-weight, remove), or all at once when a reload gives a pool its
// servers again (Apply).
//
// Every change goes to the ring, which the data path reads without locks, so no connection
// waits for one. Removing a backend never closes its open connections: they finish, as in a
// drain. Writers are serialised by one mutex, never held by the data path.
package control

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"lb/health"
	"lb/ring"
)

// Traffic is what the data path counted for one backend since lb started.
type Traffic struct {
	Connections uint64 // connections made to it
	BytesIn     uint64 // bytes from it to clients
	BytesOut    uint64 // bytes from clients to it
}

// Config is what a Control changes and reads.
type Config struct {
	Ring   *ring.Ring
	Prober *health.Prober // probes added backends at once, and reports the last probes
	Pool   string         // the name List gives the ring; empty: "default"
	// Discovered, when set, reports the backends another owner (DNS discovery) keeps in the
	// ring: Apply leaves them alone.
	Discovered func(id string) bool
	// Traffic, when set, returns the data path's counters by backend id; List calls it once.
	Traffic func() map[string]Traffic
	// RemoveAfter bounds how long a backend removed through the API stays in the ring,
	// draining, while it has open connections; 0: 10s. The connections go on after it.
	RemoveAfter time.Duration
	Log         zerolog.Logger
}

// Backend is one backend as the admin API shows it (GET /backends).
type Backend struct {
	Pool        string `json:"pool"`
	ID          string `json:"id"`
	Addr        string `json:"addr"`
	Weight      int    `json:"weight"`
	State       State  `json:"state"`
	Active      int64  `json:"active"`      // connections open now
	Connections uint64 `json:"connections"` // connections made since lb started
	BytesIn     uint64 `json:"bytes_in"`    // bytes from the backend to clients
	BytesOut    uint64 `json:"bytes_out"`   // bytes from clients to the backend
	LastProbe   *Probe `json:"last_probe,omitempty"`
	Removing    bool   `json:"removing,omitempty"` // removed, draining: leaves when its connections end
}

// State is a backend's state: up, down or draining.
type State string

// The states of a backend.
const (
	Up       State = "up"       // picked for new connections
	Down     State = "down"     // failed its probes (or has not passed one yet): not picked
	Draining State = "draining" // taken out by an operator: not picked; open connections finish
)

// Probe is the latest health probe of a backend.
type Probe struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	LatencyMS float64   `json:"latency_ms"`
	Error     string    `json:"error,omitempty"`
}

// Control changes one ring. Its methods are safe for concurrent use.
type Control struct {
	cfg Config
	mu  sync.Mutex // serialises changes to the ring, so a reload and an API call never interleave
	// removing holds the backends Remove drains before it takes them out, with the time
	// their wait ends; under mu.
	removing map[string]time.Time
}

// New returns a Control of cfg.Ring.
func New(cfg Config) *Control {
	if cfg.Pool == "" {
		cfg.Pool = "default"
	}
	if cfg.RemoveAfter <= 0 {
		cfg.RemoveAfter = 10 * time.Second
	}
	return &Control{cfg: cfg, removing: map[string]time.Time{}}
}

// List returns every backend of the ring, in ring order, with its state, weight, active
// connections, traffic and last probe.
func (c *Control) List() []Backend {
	c.mu.Lock()
	removing := make(map[string]bool, len(c.removing))
	for id := range c.removing {
		removing[id] = true
	}
	c.mu.Unlock()
	var traffic map[string]Traffic
	if c.cfg.Traffic != nil {
		traffic = c.cfg.Traffic()
	}
	snap := c.cfg.Ring.Snapshot()
	out := make([]Backend, len(snap))
	for i, s := range snap {
		t := traffic[s.ID]
		b := Backend{
			Pool: c.cfg.Pool, ID: s.ID, Addr: s.Addr, Weight: s.Weight, State: stateOf(s),
			Active: s.Active, Connections: t.Connections, BytesIn: t.BytesIn, BytesOut: t.BytesOut,
			Removing: removing[s.ID],
		}
		if p, ok := c.cfg.Prober.Last(s.ID); ok {
			b.LastProbe = &Probe{At: p.At, OK: p.Err == nil, LatencyMS: float64(p.Latency.Microseconds()) / 1000}
			if p.Err != nil {
				b.LastProbe.Error = p.Err.Error()
			}
		}
		out[i] = b
	}
	return out
}

// stateOf is the one state an operator sees: draining wins over health, which says up or down.
func stateOf(s ring.Status) State {
	switch {
	case s.State == ring.Draining:
		return Draining
	case s.State == ring.Down || !s.Up:
		return Down
	}
	return Up
}

// Add adds b to the ring down and probes it at once: it is up when Add returns if it
// answered, and otherwise comes up after the prober's Rise good probes.
func (c *Control) Add(b ring.Backend) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.addDown(b); err != nil {
		return err
	}
	c.cfg.Prober.Admit(context.Background(), []ring.Backend{b})
	return nil
}

// addDown adds b to the ring, marked unhealthy until a probe says otherwise. c.mu is held.
func (c *Control) addDown(b ring.Backend) error {
	if err := c.cfg.Ring.AddDown(b); err != nil {
		return fmt.Errorf("add %s: %w", b.Addr, err)
	}
	return nil
}

// Drain stops new connections to the backend; its open connections and sticky clients go on.
func (c *Control) Drain(id string) bool { return c.setState(id, ring.Draining) }

// Enable ends a drain (or an operator's down): the backend is picked again while healthy.
// It also cancels a removal still waiting for the backend's connections to end.
func (c *Control) Enable(id string) bool { return c.setState(id, ring.Up) }

func (c *Control) setState(id string, st ring.State) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, _, ok := c.cfg.Ring.Lookup(id); !ok {
		return false
	}
	c.cfg.Ring.SetState(id, st)
	delete(c.removing, id)
	return true
}

// SetWeight sets the backend's weight; picks use it from now on.
func (c *Control) SetWeight(id string, weight int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Ring.SetWeight(id, weight)
}

// Remove drains the backend, then takes it out of the ring: no new connection goes to it
// once Remove returns; it stays listed, draining, while it has open connections (its sticky
// clients still reach it), and leaves the ring when the last one ends or after
// Config.RemoveAfter, whichever comes first (Run checks). Its open connections always finish:
// the data path never closes them on removal.
func (c *Control) Remove(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, _, ok := c.cfg.Ring.Lookup(id); !ok {
		return false
	}
	c.cfg.Ring.SetState(id, ring.Draining)
	c.removing[id] = time.Now().Add(c.cfg.RemoveAfter)
	c.reap()
	return true
}

// Run takes backends removed by Remove out of the ring once drained, until ctx is done.
func (c *Control) Run(ctx context.Context) {
	tick := time.NewTicker(reapEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			c.mu.Lock()
			c.reap()
			c.mu.Unlock()
		}
	}
}

// reapEvery is how often Run looks at the backends being removed.
const reapEvery = 250 * time.Millisecond

// reap takes out of the ring the backends being removed that have no open connection left,
// or whose time is up. c.mu is held.
func (c *Control) reap() {
	if len(c.removing) == 0 {
		return
	}
	now := time.Now()
	for _, s := range c.cfg.Ring.Snapshot() {
		if deadline, ok := c.removing[s.ID]; ok && (s.Active == 0 || now.After(deadline)) {
			c.cfg.Ring.Remove(s.ID)
			delete(c.removing, s.ID)
			c.cfg.Log.Info().Str("id", s.ID).Str("addr", s.Addr).Int64("open", s.Active).Msg("backend removed")
		}
	}
	for id := range c.removing {
		if _, _, ok := c.cfg.Ring.Lookup(id); !ok {
			delete(c.removing, id) // removed otherwise meanwhile (a reload)
		}
	}
}
