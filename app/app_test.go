package app

import (
	"context"
	"fmt"
	"lb/internal/probetarget"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lb/config"
	"lb/health"
	"lb/internal/logtest"
	"lb/l4"
	"lb/ring"
)

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs lb in-process on the source and returns it and its log; it shuts down when
// the test ends.
func start(t *testing.T, src Source) (*App, *logtest.Lines) {
	t.Helper()
	return startWith(t, src, func(*Options) {})
}

// startWith is start with the options set changes.
func startWith(t *testing.T, src Source, set func(*Options)) (*App, *logtest.Lines) {
	t.Helper()
	logs, log := logtest.New()
	src.Defaults.Balance = "roundrobin"
	src.Defaults.Health = config.Health{Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}
	src.Defaults.ConnectTimeout = time.Second
	if src.Listen == "" {
		src.Listen = "127.0.0.1:0"
	}
	o := Options{
		Source: src, Threads: 1, Expect: health.DefaultStatus, Log: log,
		L4:       l4.Config{SniffTimeout: time.Second, MaxHeaderBytes: 4096, ConnectTimeout: time.Second, ResolveEvery: time.Minute},
		Sessions: Sessions{Store: "memory", TTL: time.Minute, MaxEntries: 10, Timeout: time.Second, Cluster: "t"},
	}
	set(&o)
	a, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a, logs
}

// watching has lb watch the configuration's files.
func watching(o *Options) { o.Watch = true }

// listing is pool/id=addr:state of every backend the admin API lists.
func listing(a *App) string {
	var out []string
	for _, b := range (backends{a}).List() {
		out = append(out, fmt.Sprintf("%s/%s=%s:%s", b.Pool, b.ID, b.Addr, b.State))
	}
	return strings.Join(out, " ")
}

// A reload of the flags' servers file replaces a backend whose PROXY version or address
// changed under the same id, and its probes then send the header: nothing of the old
// definition is silently kept.
func TestReloadReplacesChangedServers(t *testing.T) {
	addrs, seen := probetarget.Listen(t, 3)
	servers := filepath.Join(t.TempDir(), "servers.txt")
	write(t, servers, addrs[0]+" id=a\n"+addrs[1]+" id=b\n")
	a, _ := start(t, Source{ServersFile: servers})
	write(t, servers, addrs[0]+" id=a proxy=v2\n"+addrs[2]+" id=b\n")
	if err := a.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if got, want := listing(a), fmt.Sprintf("default/a=%s:up default/b=%s:up", addrs[0], addrs[2]); got != want {
		t.Errorf("after the reload: %s\nwant %s", got, want)
	}
	if b, _, _ := (*a.pools.Load())[0].ring.Lookup("a"); b.Proxy != "v2" {
		t.Errorf("backend a after the reload: %+v, want proxy v2", b)
	}
	awaitFirstBytes(t, seen, "\r\n\r\n\x00\r\nQUIT\n")
}

// awaitFirstBytes waits for a connection to a backend of listenN whose first bytes begin
// with prefix: start-up's probes without it come first.
func awaitFirstBytes(t *testing.T, seen chan string, prefix string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case got := <-seen:
			if strings.HasPrefix(got, prefix) {
				return
			}
		case <-deadline:
			t.Fatalf("no probe sent %q within 5s", prefix)
		}
	}
}

// A pool's send_proxy reaches its probes: a backend behind PROXY protocol is probed as the
// data path speaks to it.
func TestProbesSpeakThePoolsProxy(t *testing.T) {
	addrs, seen := probetarget.Listen(t, 1)
	servers := filepath.Join(t.TempDir(), "servers.txt")
	write(t, servers, addrs[0]+" id=a\n")
	start(t, Source{ServersFile: servers, Defaults: config.Pool{SendProxy: "v1"}})
	if first := <-seen; first != "PROXY UNKNOWN\r\n" {
		t.Errorf("the first probe sent %q, want PROXY UNKNOWN", first)
	}
}

const twoPools = `listeners:
  - listen: 127.0.0.1:0
    routes:
%s      - pool: a
pools:
  a:
    balance: %s
    sticky_cookie: %s
    health: {interval: %s}
    servers: [%s]
%s`

// A kept pool takes its new balancing, health and sticky settings and keeps its backends'
// state; a new pool appears in the admin API, and a pool gone leaves it.
func TestReloadAppliesAKeptPoolsSettings(t *testing.T) {
	addrs, _ := probetarget.Listen(t, 2)
	path := filepath.Join(t.TempDir(), "lb.yaml")
	poolB := "  b:\n    servers: [" + addrs[1] + " id=b1]\n"
	routeB := "      - {match: {host: b.test}, pool: b}\n"
	write(t, path, fmt.Sprintf(twoPools, routeB, "roundrobin", "lb_a", "1h", addrs[0]+" id=a1", poolB))
	a, _ := start(t, Source{ConfigFile: path})
	pa, pb := (*a.pools.Load())[0], (*a.pools.Load())[1]
	if pa.l4Pool(nil).Sticky.Cookie != "lb_a" || pb.l4Pool(nil).Sticky.Cookie != "" {
		t.Errorf("sticky cookies: pool a %q, pool b %q; want lb_a and none (b sets none)", pa.cfg.StickyCookie, pb.cfg.StickyCookie)
	}
	pa.ctl.Drain("a1")
	if got := listing(a); got != fmt.Sprintf("a/a1=%s:draining b/b1=%s:up", addrs[0], addrs[1]) {
		t.Fatalf("before: %s", got)
	}

	write(t, path, fmt.Sprintf(twoPools, "", "leastconn", `""`, "2s", addrs[0]+" id=a1", ""))
	if err := a.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if got := listing(a); got != fmt.Sprintf("a/a1=%s:draining", addrs[0]) {
		t.Errorf("after: %s; want pool a's backend still drained, pool b gone", got)
	}
	kept := (*a.pools.Load())[0]
	if kept.ring != pa.ring || kept.ring.Config().Balance != ring.LeastConn {
		t.Errorf("pool a after the reload: same ring %v, balance %v; want the same ring, leastconn", kept.ring == pa.ring, kept.ring.Config().Balance)
	}
	if kept.cfg.StickyCookie != "" || kept.l4Pool(nil).Sticky.Cookie != "" {
		t.Errorf("pool a kept its sticky cookie %q after the reload removed it", kept.cfg.StickyCookie)
	}
	if got := kept.prober.Config().Interval; got != 2*time.Second {
		t.Errorf("pool a's probes every %s after the reload, want 2s", got)
	}
}

// A file that does not load changes nothing, and the log says where.
func TestReloadOfABadFileChangesNothing(t *testing.T) {
	addrs, _ := probetarget.Listen(t, 2)
	servers := filepath.Join(t.TempDir(), "servers.txt")
	write(t, servers, addrs[0]+" id=a\n")
	a, logs := start(t, Source{ServersFile: servers})
	before := listing(a)
	write(t, servers, addrs[1]+" id=b\n127.0.0.1:99999\n")
	if err := a.Reload("test"); err == nil {
		t.Fatal("a bad file reloaded")
	}
	if got := listing(a); got != before {
		t.Errorf("a bad file changed the backends: %s, was %s", got, before)
	}
	last := logs.All()[len(logs.All())-1]
	if last["message"] != "config not reloaded: nothing changed" || last["line"] != float64(2) || last["file"] != servers {
		t.Errorf("logged %v; want the file and line 2", last)
	}
}

// Probe checks what lb serve would check: a pool's HTTP health check (a 500 is down) and
// its PROXY header, for each pool of the file.
func TestProbeFollowsThePoolsCheck(t *testing.T) {
	addrs, seen := probetarget.Listen(t, 1)
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer sick.Close()
	path := filepath.Join(t.TempDir(), "lb.yaml")
	write(t, path, "listeners:\n  - listen: 127.0.0.1:0\n    routes:\n      - {match: {host: b.test}, pool: b}\n      - pool: a\n"+
		"pools:\n  a: {servers: ["+strings.TrimPrefix(sick.URL, "http://")+"], health: {http: /health}}\n"+
		"  b: {servers: ["+addrs[0]+"], send_proxy: v2}\n")
	cfg, err := Source{ConfigFile: path, Defaults: config.Pool{Balance: "roundrobin", ConnectTimeout: time.Second,
		Health: config.Health{Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1}}}.Load()
	if err != nil {
		t.Fatal(err)
	}
	results := Probe(context.Background(), cfg, health.DefaultStatus, nil)
	if len(results) != 2 || results[0].Pool != "a" || results[0].Up || results[0].Status != 500 || results[1].Pool != "b" || !results[1].Up {
		t.Errorf("probe = %+v; want pool a's backend down with 500, pool b's up", results)
	}
	awaitFirstBytes(t, seen, "\r\n\r\n\x00\r\nQUIT\n")
}

// --watch follows the servers file a config file names, not only the config file: an edit of
// it is applied (and one of another file of the directory is not).
func TestWatchFollowsTheServersFileOfAConfig(t *testing.T) {
	addrs, _ := probetarget.Listen(t, 2)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "servers.txt"), addrs[0]+" id=a\n")
	path := filepath.Join(dir, "lb.yaml")
	write(t, path, "listeners:\n  - listen: 127.0.0.1:0\n    routes: [{pool: web}]\npools:\n  web: {servers_file: servers.txt}\n")
	a, logs := startWith(t, Source{ConfigFile: path}, watching)
	write(t, filepath.Join(dir, "other.txt"), "not lb's\n")
	write(t, filepath.Join(dir, "servers.txt"), addrs[0]+" id=a\n"+addrs[1]+" id=b\n")
	deadline := time.Now().Add(10 * time.Second)
	want := fmt.Sprintf("web/a=%s:up web/b=%s:up", addrs[0], addrs[1])
	for listing(a) != want {
		if time.Now().After(deadline) {
			t.Fatalf("10s after the servers file changed: %s, want %s", listing(a), want)
		}
		time.Sleep(10 * time.Millisecond) // polling the condition, bounded by the deadline
	}
	reloads := 0
	for _, l := range logs.All() {
		if l["message"] == "config reloaded" {
			reloads++
		}
	}
	if reloads != 1 {
		t.Errorf("%d reloads, want 1: the other file's change is not lb's", reloads)
	}
}

// A change to the servers file made while Start probes, after it read the file and before
// its watch is in place (so that no event will report it), is applied before Start returns.
// The backend's HTTP check makes the change, so it is made inside that window every time.
func TestWatchMissesNoChangeBeforeItIsArmed(t *testing.T) {
	addrs, _ := probetarget.Listen(t, 1)
	servers := filepath.Join(t.TempDir(), "servers.txt")
	changed := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case changed <- os.WriteFile(servers, []byte(r.Host+" id=a check=http:/h\n"+addrs[0]+" id=b\n"), 0o644):
		default: // changed once already
		}
	}))
	defer srv.Close()
	backend := srv.Listener.Addr().String()
	write(t, servers, backend+" id=a check=http:/h\n")
	a, _ := startWith(t, Source{ServersFile: servers}, watching)
	select {
	case err := <-changed:
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("Start returned before its first probe: the check did not change the file")
	}
	if got, want := listing(a), fmt.Sprintf("default/a=%s:up default/b=%s:up", backend, addrs[0]); got != want {
		t.Errorf("when Start returned: %s\nwant %s", got, want)
	}
}
