package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lb/admin"
	"lb/health"
	"lb/internal/logtest"
	"lb/ring"
	"lb/serversfile"
)

// listenN starts n loopback listeners that accept and close, as health probes need, and
// closes them when the test ends.
func listenN(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close(); <-done })
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// refused is a loopback address where nothing listens.
func refused(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

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
	return New(Config{Ring: r, Prober: p, File: path, Log: log}), r, logs
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
	a := listenN(t, 4)
	dead := refused(t)
	c, r, _ := setup(t, a[0]+" id=keep", a[1]+" id=drained", a[2]+" id=gone", a[3]+" id=heavy weight=1")
	c.Drain("drained")
	kept := r.Start("keep") // an open connection, to see it survive
	defer kept.End()

	ln := listenN(t, 1)[0]
	write(t, c.cfg.File, a[0]+" id=keep", a[1]+" id=drained", a[3]+" id=heavy weight=5", ln+" id=new", dead+" id=dead")
	ch, err := c.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Changes{Added: 2, Removed: 1, Reweighted: 1, Unchanged: 2}); ch != want {
		t.Errorf("Reload = %+v, want %+v", ch, want)
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

func TestBadFileChangesNothing(t *testing.T) {
	a := listenN(t, 2)
	c, _, logs := setup(t, a[0]+" id=x", a[1]+" id=y weight=2")
	before := states(c)
	for _, bad := range [][]string{
		{a[0] + " id=x", "127.0.0.1:99999"},
		{a[0] + " id=x", a[0] + " id=z"},
		{"# nothing"},
	} {
		write(t, c.cfg.File, bad...)
		mark := len(logs.All())
		c.ReloadAndLog(context.Background(), "test")
		if got := states(c); got != before {
			t.Errorf("file %q changed the ring: %s, was %s", bad, got, before)
		}
		lines := logs.All()[mark:]
		if len(lines) != 1 || lines[0]["level"] != "error" || lines[0]["file"] != c.cfg.File || lines[0]["reason"] == nil {
			t.Errorf("file %q logged %v; want one error line with the file, line and reason", bad, lines)
		}
	}
	write(t, c.cfg.File, a[0]+" id=x", "127.0.0.1:99999")
	_, err := c.Reload(context.Background())
	var le *serversfile.LineError
	if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(le.Reason, "bad port") {
		t.Errorf("Reload of a bad line 2 = %v, want a LineError at line 2", err)
	}
	os.Remove(c.cfg.File)
	if _, err := c.Reload(context.Background()); !errors.Is(err, os.ErrNotExist) || states(c) != before {
		t.Errorf("Reload of a missing file = %v, ring %s; want the not-exist error, nothing changed", err, states(c))
	}
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

// TestWatchSeesRenamesAndSymlinkSwaps saves the file the ways editors and Kubernetes do:
// written in place, a new file renamed over it, and a ConfigMap's ..data symlink swap.
func TestWatchSeesRenamesAndSymlinkSwaps(t *testing.T) {
	a := listenN(t, 4)
	dir := t.TempDir()
	// The ConfigMap layout: servers.txt -> ..data/servers.txt, ..data -> ..2026_v1.
	v1 := filepath.Join(dir, "..v1")
	os.Mkdir(v1, 0o755)
	write(t, filepath.Join(v1, "servers.txt"), a[0]+" id=one")
	must(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "servers.txt"), filepath.Join(dir, "servers.txt")))
	path := filepath.Join(dir, "servers.txt")

	backends, err := serversfile.Load(path)
	must(t, err)
	r, err := ring.New(backends...)
	must(t, err)
	_, log := logtest.New()
	p := health.NewProber(r, health.Config{Timeout: time.Second}, log)
	p.Init(context.Background())
	c := New(Config{Ring: r, Prober: p, File: path, Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch = %v", err)
		}
	}()
	// Watch takes the content as loaded when it starts; let its watch be in place first.
	waitFor(t, 5*time.Second, "Watch started", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.loaded != [32]byte{}
	})

	// Kubernetes: a new timestamped dir, a new symlink renamed over ..data.
	v2 := filepath.Join(dir, "..v2")
	os.Mkdir(v2, 0o755)
	write(t, filepath.Join(v2, "servers.txt"), a[0]+" id=one", a[1]+" id=two")
	must(t, os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	waitFor(t, 10*time.Second, "the ConfigMap swap reloaded", func() bool { return states(c) == "one=up:1 two=up:1" })

	// An editor: write a new file and rename it over the old (the symlink goes away).
	tmp := filepath.Join(dir, ".servers.txt.swp")
	write(t, tmp, a[1]+" id=two weight=3", a[2]+" id=three")
	must(t, os.Rename(tmp, path))
	waitFor(t, 10*time.Second, "the rename reloaded", func() bool { return states(c) == "two=up:3 three=up:1" })

	// In place.
	write(t, path, a[3]+" id=four")
	waitFor(t, 10*time.Second, "the write reloaded", func() bool { return states(c) == "four=up:1" })
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestAdminOverControl drives the API through a real HTTP client against a Control: what a
// call says is what the ring then does.
func TestAdminOverControl(t *testing.T) {
	a := listenN(t, 3)
	c, r, _ := setup(t, a[0]+" id=a", a[1]+" id=b")
	srv := httptest.NewServer(admin.New(admin.Config{Backends: c, Token: "t0k"}))
	defer srv.Close()
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer t0k")
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		defer res.Body.Close()
		var out map[string]any
		json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}

	if st, out := call("POST", "/backends", `{"addr": "`+a[2]+`", "id": "c", "weight": 2}`); st != 201 || out["state"] != "up" || out["weight"] != 2.0 {
		t.Errorf("POST /backends = %d %v; want 201, up at its first good probe, weight 2", st, out)
	}
	if st, out := call("POST", "/backends", `{"addr": "`+refused(t)+`", "id": "d"}`); st != 201 || out["state"] != "down" {
		t.Errorf("POST /backends of a dead address = %d %v; want 201 and down", st, out)
	}
	if st, out := call("POST", "/backends/a/drain", ""); st != 200 || out["state"] != "draining" {
		t.Errorf("drain = %d %v", st, out)
	}
	for range 12 {
		if b, _ := r.Next(); b.ID == "a" || b.ID == "d" {
			t.Fatalf("picked %s: drained or down", b.ID)
		}
	}
	if _, up, _ := r.Lookup("a"); !up {
		t.Error("a drained backend refuses its sticky clients; they should still reach it")
	}
	if st, out := call("PATCH", "/backends/b", `{"weight": 4}`); st != 200 || out["weight"] != 4.0 {
		t.Errorf("PATCH = %d %v", st, out)
	}
	if st, out := call("POST", "/backends/a/enable", ""); st != 200 || out["state"] != "up" {
		t.Errorf("enable = %d %v", st, out)
	}
	if st, _ := call("DELETE", "/backends/c", ""); st != 200 {
		t.Errorf("DELETE = %d", st)
	}
	if st, out := call("DELETE", "/backends/c", ""); st != 404 || !strings.Contains(fmt.Sprint(out["error"]), `"c"`) {
		t.Errorf("DELETE again = %d %v, want 404 naming the id", st, out)
	}
	if got, want := states(c), "a=up:1 b=up:4 d=down:1"; got != want {
		t.Errorf("after the calls: %s, want %s", got, want)
	}
	var list []admin.Backend
	res, err := http.Get(srv.URL + "/backends")
	must(t, err)
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("GET /backends without the token = %d, want 401", res.StatusCode)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/backends", nil)
	req.Header.Set("Authorization", "Bearer t0k")
	res, err = http.DefaultClient.Do(req)
	must(t, err)
	must(t, json.NewDecoder(res.Body).Decode(&list))
	res.Body.Close()
	if len(list) != 3 || list[0].LastProbe == nil || !list[0].LastProbe.OK || list[2].LastProbe == nil || list[2].LastProbe.OK || list[2].LastProbe.Error == "" {
		t.Errorf("GET /backends = %+v; want the last probe of each, d's failed with its error", list)
	}
}

// TestRemoveDrainsFirst checks DELETE's order: a backend with open connections stays listed,
// draining and removing, until the last one ends; one without goes at once; enable cancels.
func TestRemoveDrainsFirst(t *testing.T) {
	a := listenN(t, 3)
	c, r, _ := setup(t, a[0]+" id=busy", a[1]+" id=idle", a[2]+" id=back")
	conn := r.Start("busy")
	if !c.Remove("busy") || !c.Remove("idle") || c.Remove("nobody") {
		t.Fatal("Remove of busy and idle should report true, of nobody false")
	}
	list := c.List()
	if len(list) != 2 || list[0].ID != "busy" || list[0].State != admin.Draining || !list[0].Removing || list[0].Active != 1 {
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
	a := listenN(t, 2)
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
