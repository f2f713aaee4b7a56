package e2e

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lb/internal/freeport"
)

// attackPage is what a page of another origin can make a browser send to an admin API
// without a token: a form that posts itself (drain n1) and a no-cors fetch whose body, a
// text/plain string, is the JSON of a backend (add the attacker's at weight 1000).
// window.attack resolves once both answers have come back.
const attackPage = `<!doctype html>
<iframe name="sink"></iframe>
<form id="drain" method="POST" action="http://%[1]s/backends/n1/drain" target="sink"></form>
<script>
const formDone = new Promise(resolve => document.querySelector("iframe").addEventListener("load", () => resolve("form answered")));
const fetchDone = fetch("http://%[1]s/backends", {mode: "no-cors", method: "POST",
  body: JSON.stringify({addr: "127.0.0.1:6666", id: "evil", weight: 1000})})
  .then(r => "fetch answered (" + r.type + ")", e => "fetch failed: " + e);
document.getElementById("drain").submit();
window.attack = Promise.all([formDone, fetchDone]).then(a => a.join(", "));
</script>`

// TestAdminRefusesOtherOriginsInBrowser loads, in headless Chromium, a page from another
// loopback origin that posts a form to drain a backend and a no-cors fetch to add one, to an
// admin API without a token (the documented default). Both answers come back to the
// browser, and the backends are as they were. A request whose Host is another name (what a
// DNS-rebound page sends) is 403.
func TestAdminRefusesOtherOriginsInBrowser(t *testing.T) {
	chromium := requireTool(t, "chromium")
	ng := startNginx(t, 2)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	startLB(t, nil, "serve", "-f", writeServersFile(t, ng[0].Addr+" id=n1", ng[1].Addr+" id=n2"),
		"--listen", "127.0.0.1:0", "--admin-listen", adminAddr)
	var before []map[string]any
	if status := adminGet(t, adminAddr, "", "/backends", &before); status != 200 || len(before) != 2 {
		t.Fatalf("GET /backends = %d %v; want the 2 backends", status, before)
	}

	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, attackPage, adminAddr)
	}))
	defer evil.Close()
	// Another origin on loopback: another name and port than the admin listener's.
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1) + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 30*time.Second)
	defer cancelTimeout()
	if err := chromedp.Do(ctx, chromedp.Navigate(evilURL)); err != nil {
		t.Fatalf("load the attacking page %s: %v", evilURL, err)
	}
	outcome, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.attack`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("the attacking page: %v", err)
	}
	t.Logf("the attacking page at %s: %s", evilURL, outcome)
	if outcome != "form answered, fetch answered (opaque)" {
		t.Errorf("the attacking page saw %q; want both requests sent and answered", outcome)
	}
	var after []map[string]any
	adminGet(t, adminAddr, "", "/backends", &after)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("GET /backends after the attacking page = %v; want it unchanged: %v", after, before)
	}

	req, _ := http.NewRequest("GET", "http://"+adminAddr+"/backends", nil)
	req.Host = "evil.example"
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 403 || !strings.Contains(string(body), "--admin-token") || strings.Contains(string(body), ng[0].Addr) {
		t.Errorf("GET /backends with Host evil.example = %s %s; want 403 saying what to do, and no backend", res.Status, body)
	}
}

// TestAdminOnUnixSocket runs the admin API on unix:PATH without a token: the socket is mode
// 0600, lb backends and lb drain reach it, and it is gone when lb stops.
func TestAdminOnUnixSocket(t *testing.T) {
	ng := startNginx(t, 2)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, ng[0].Addr+" id=n1", ng[1].Addr+" id=n2"),
		"--listen", "127.0.0.1:0", "--admin-listen", "unix:"+sock)
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v; want a socket of mode 0600", sock, fi.Mode(), err)
	}
	out, stderr, status := runLB(t, "backends", "--admin-listen", "unix:"+sock)
	if status != 0 || !strings.HasPrefix(out, "BACKEND ") || !strings.Contains(out, ng[1].Addr+"  n2") {
		t.Errorf("lb backends --admin-listen unix:%s: exit %d\n%s%s\nwant a table of n1 and n2", sock, status, out, stderr)
	}
	out, stderr, status = runLB(t, "drain", "--admin-listen", "unix:"+sock, "n2")
	if status != 0 || !strings.Contains(out, "draining") {
		t.Errorf("lb drain --admin-listen unix:%s n2: exit %d\n%s%s", sock, status, out, stderr)
	}
	lb.stop(t)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("after lb stopped, %s: %v; want it removed", sock, err)
	}
}

// TestMetricsListen runs --metrics-listen beside an admin API with a token: the metrics
// listener serves /metrics, /healthz and /readyz without one, to any Host, and nothing else.
func TestMetricsListen(t *testing.T) {
	ng := startNginx(t, 1)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	startLB(t, nil, "serve", "-f", writeServersFile(t, ng[0].Addr+" id=n1"), "--listen", "127.0.0.1:0",
		"--admin-listen", adminAddr, "--admin-token", "s3cret", "--metrics-listen", metricsAddr)
	call := func(method, url, host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		if host != "" {
			req.Host = host
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if status, body := call("GET", "http://"+metricsAddr+"/metrics", "prometheus.example:9100"); status != 200 || !strings.Contains(body, "lb_") {
		t.Errorf("GET /metrics on --metrics-listen without a token = %d (%d bytes); want 200 with lb's metrics", status, len(body))
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, body := call("GET", "http://"+metricsAddr+path, ""); status != 200 {
			t.Errorf("GET %s on --metrics-listen = %d %s, want 200", path, status, body)
		}
	}
	if status, _ := call("GET", "http://"+adminAddr+"/metrics", ""); status != 401 {
		t.Errorf("GET /metrics on --admin-listen without the token = %d, want 401", status)
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/metrics", 405}, {"DELETE", "/healthz", 405},
		{"GET", "/backends", 404}, {"GET", "/stats", 404}, {"GET", "/", 404}, {"POST", "/backends/n1/drain", 404},
	} {
		if status, _ := call(c.method, "http://"+metricsAddr+c.path, ""); status != c.status {
			t.Errorf("%s %s on --metrics-listen = %d, want %d", c.method, c.path, status, c.status)
		}
	}
	var list []struct{ ID, State string }
	adminGet(t, adminAddr, "s3cret", "/backends", &list)
	if fmt.Sprint(list) != "[{n1 up}]" {
		t.Errorf("GET /backends = %v; want n1 up, untouched by the metrics listener", list)
	}
}

// TestAdminConnectionsLeaveDescriptorsForClients holds 4,100 idle connections to the admin
// listener of an lb run with 1,024 open files, the attack that used to take every descriptor
// (the data listener then failed with EMFILE). lb holds at most its cap of them, clients of
// the data listener are all served meanwhile, and the admin API answers again once the idle
// ones are cut.
func TestAdminConnectionsLeaveDescriptorsForClients(t *testing.T) {
	slow(t, "4,100 connections, and seconds until lb cuts the idle ones")
	requireTool(t, "prlimit")
	ng := startNginx(t, 2)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	lb := startLBWith(t, []string{"prlimit", "--nofile=1024:1024"}, nil,
		"serve", "-f", writeServersFile(t, ng[0].Addr, ng[1].Addr), "--listen", "127.0.0.1:0", "--admin-listen", adminAddr)
	fds := func() int {
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", lb.cmd.Process.Pid))
		return len(entries)
	}
	fdsBefore := fds()

	const idle = 4100
	start := time.Now()
	held := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range idle {
		c, err := net.DialTimeout("tcp", adminAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("admin connection %d: %v", i, err)
		}
		held = append(held, c)
	}
	dialled := time.Since(start)
	fdsHeld := fds()

	// Meanwhile, the data listener serves every client.
	const clients = 200
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	served := 0
	var firstErr error
	for range clients {
		if _, err := backendOf(client, "http://"+lb.Addr+"/"); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		served++
	}
	// How many of the idle connections lb still holds: those a read does not find closed.
	open := 0
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
			}
		}
	}
	t.Logf("lb at 1,024 open files: %d descriptors before, %d with %d admin connections dialled in %v (%d of them still open a moment later); %d of %d data clients served",
		fdsBefore, fdsHeld, idle, dialled.Round(time.Millisecond), open, served, clients)
	if served != clients {
		t.Errorf("%d of %d data clients served while %d admin connections were held; first error: %v", served, clients, idle, firstErr)
	}
	if open > 64 {
		t.Errorf("lb holds %d idle admin connections; want at most its cap, 64", open)
	}
	if fdsHeld > fdsBefore+66 {
		t.Errorf("lb's descriptors went from %d to %d with the admin connections held; want at most 66 more", fdsBefore, fdsHeld)
	}

	// The admin API answers again once lb has cut the idle ones (ReadHeaderTimeout: 3s).
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := (&http.Client{Timeout: time.Second}).Get("http://" + adminAddr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				t.Logf("GET /healthz answered %v after the admin connections were dialled", time.Since(start).Round(time.Millisecond))
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz still refused 10s after the idle admin connections: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the condition, with the deadline above
	}
}
