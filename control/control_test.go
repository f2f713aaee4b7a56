package control

import (
	"context"
	"fmt"
	"lb/internal/probetarget"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lb/health"
	"lb/internal/logtest"
	"lb/ring"
	"lb/serversfile"
)

// setup writes lines as the servers file, builds the ring from it as lb serve does, probes
// it once and returns a Control of it.
func setup(t *testing.T, lines ...string) (*Control, *ring.Ring, *logtest.Lines) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "servers.txt")
	write(t, path, lines...)
	backends, err := serversfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ring.New(backends...)
	if err != nil {
		t.Fatal(err)
	}
	logs, log := logtest.New()
	p := health.NewProber(r, health.Config{Timeout: time.Second, Rise: 3}, log)
	p.Init(context.Background())
	return New(Config{Ring: r, Prober: p, Log: log}), r, logs
}

func write(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// states returns id=state:weight of every backend, in ring order.
func states(c *Control) string {
	var out []string
	for _, b := range c.List() {
		out = append(out, fmt.Sprintf("%s=%s:%d", b.ID, b.State, b.Weight))
	}
	return strings.Join(out, " ")
}

func TestReloadAppliesTheDifference(t *testing.T) {
	a := targets(t, 4)
	dead := probetarget.Refused(t)
	c, r, _ := setup(t, a[0]+" id=keep", a[1]+" id=drained", a[2]+" id=gone", a[3]+" id=heavy weight=1")
	c.Drain("drained")
	kept := r.Start("keep") // an open connection, to see it survive
	defer kept.End()

	ln := targets(t, 1)[0]
	ch, err := c.Apply(context.Background(), parse(t, a[0]+" id=keep", a[1]+" id=drained", a[3]+" id=heavy weight=5", ln+" id=new", dead+" id=dead"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Changes{Added: 2, Removed: 1, Reweighted: 1, Unchanged: 2}); ch != want {
		t.Errorf("Apply = %+v, want %+v", ch, want)
	}
	// new answered its first probe: up at once, not after Rise=3 rounds. dead stays down.
	if got, want := states(c), "keep=up:1 drained=draining:1 heavy=up:5 new=up:1 dead=down:1"; got != want {
		t.Errorf("after reload: %s\nwant          %s", got, want)
	}
	if s := r.Snapshot()[0]; s.ID != "keep" || s.Active != 1 {
		t.Errorf("keep after reload = %+v; want its open connection still counted", s)
	}
	for range 20 {
		if b, ok := r.Next(); ok && (b.ID == "gone" || b.ID == "drained" || b.ID == "dead") {
			t.Fatalf("picked %s after the reload", b.ID)
		}
	}
}

// A backend is the same backend only if everything that defines it is: a new address or
// PROXY version or check under the same id replaces it (probed, the old one draining with
// its connections), while a new weight or maxconn is applied in place.
func TestApplyReplacesAChangedServer(t *testing.T) {
	a := targets(t, 4)
	c, r, _ := setup(t, a[0]+" id=addr", a[1]+" id=proxy", a[2]+" id=check", a[3]+" id=limits weight=1 maxconn=5")
	held := r.Start("proxy") // open on the old proxy backend: it must not be cut
	defer held.End()
	moved := targets(t, 1)[0]
	ch, err := c.Apply(context.Background(), parse(t, moved+" id=addr", a[1]+" id=proxy proxy=v2", a[2]+" id=check check=tcp", a[3]+" id=limits weight=4 maxconn=9"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Changes{Added: 3, Removed: 3, Reweighted: 1}); ch != want {
		t.Errorf("Apply = %+v, want %+v", ch, want)
	}
	for id, want := range map[string]ring.Backend{
		"addr":   {ID: "addr", Addr: moved, Weight: 1},
		"proxy":  {ID: "proxy", Addr: a[1], Weight: 1, Proxy: "v2"},
		"check":  {ID: "check", Addr: a[2], Weight: 1, Check: "tcp"},
		"limits": {ID: "limits", Addr: a[3], Weight: 4, MaxConn: 9},
	} {
		if b, up, ok := r.Lookup(id); !ok || !up || b != want {
			t.Errorf("%s after Apply: %+v up=%v in=%v; want %+v, up", id, b, up, ok, want)
		}
	}
}

// Apply leaves alone the backends another owner (discovery) keeps in the ring.
func TestApplyLeavesDiscoveredBackends(t *testing.T) {
	a := targets(t, 2)
	c, r, _ := setup(t, a[0]+" id=fixed")
	if err := r.Add(ring.Backend{ID: "found", Addr: a[1], Weight: 1}); err != nil {
		t.Fatal(err)
	}
	c.cfg.Discovered = func(id string) bool { return id == "found" }
	if _, err := c.Apply(context.Background(), parse(t, a[0]+" id=fixed")); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := r.Lookup("found"); !ok {
		t.Error("Apply of the fixed servers removed a discovered backend")
	}
}

// parse reads servers-file lines.
func parse(t *testing.T, lines ...string) []ring.Backend {
	t.Helper()
	backends, err := serversfile.Parse("servers.txt", strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return backends
}

// waitFor polls cond every few milliseconds until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		<-tick.C
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRemoveDrainsFirst checks DELETE's order: a backend with open connections stays listed,
// draining and removing, until the last one ends; one without goes at once; enable cancels.
func TestRemoveDrainsFirst(t *testing.T) {
	a := targets(t, 3)
	c, r, _ := setup(t, a[0]+" id=busy", a[1]+" id=idle", a[2]+" id=back")
	conn := r.Start("busy")
	if !c.Remove("busy") || !c.Remove("idle") || c.Remove("nobody") {
		t.Fatal("Remove of busy and idle should report true, of nobody false")
	}
	list := c.List()
	if len(list) != 2 || list[0].ID != "busy" || list[0].State != Draining || !list[0].Removing || list[0].Active != 1 {
		t.Fatalf("after removing: %+v; want busy listed, draining and removing, idle gone at once", list)
	}
	for range 10 {
		if b, _ := r.Next(); b.ID == "busy" {
			t.Fatal("a backend being removed was picked")
		}
	}
	conn.End()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, 5*time.Second, "busy removed once its connection ended", func() bool { return states(c) == "back=up:1" })

	r.Start("back")
	c.Remove("back")
	c.Enable("back")
	if got := states(c); got != "back=up:1" || c.List()[0].Removing {
		t.Errorf("enable during the removal: %s %+v; want back up and kept", got, c.List()[0])
	}
}

// TestRemoveAfterBoundsTheWait: a backend whose connections never end leaves the ring after
// RemoveAfter; its connection is still counted (the data path never closes it).
func TestRemoveAfterBoundsTheWait(t *testing.T) {
	a := targets(t, 2)
	c, r, _ := setup(t, a[0]+" id=stuck", a[1]+" id=other")
	c.cfg.RemoveAfter = 50 * time.Millisecond
	conn := r.Start("stuck")
	defer conn.End()
	c.Remove("stuck")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if states(c) != "stuck=draining:1 other=up:1" {
		t.Fatalf("right after Remove: %s; want stuck still listed, draining", states(c))
	}
	waitFor(t, 5*time.Second, "stuck removed after RemoveAfter", func() bool { return states(c) == "other=up:1" })
}

// targets starts n loopback listeners that accept and close, as health probes need.
func targets(t *testing.T, n int) []string {
	addrs, _ := probetarget.Listen(t, n)
	return addrs
}
