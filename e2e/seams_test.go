package e2e

// The seams between lb's features, held through the binary (issue 22, point 5): each test
// combines two features an operator uses together and checks what clients, backends, the
// access log and the admin listener see. A test marked "fails before the app-layer fix"
// failed on the code it was written against, for the reason it gives.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lb/internal/dnstest"
	"lb/internal/freeport"
	"lb/proxyhdr"
)

// seamDeadline bounds the waits of these tests on a change lb makes (a probe round, a
// reload, a log line): a healthy run meets each in well under a second.
const seamDeadline = 5 * time.Second

// hupAndWait sends lb SIGHUP and returns the first log line after it whose message starts
// with about (such as "config "); the test fails unless that message is want.
func hupAndWait(t *testing.T, lb *lbProcess, about, want string) logEntry {
	t.Helper()
	mark := lb.log.len()
	lb.signal(t, syscall.SIGHUP)
	e, ok := lb.log.waitFor(mark, seamDeadline, func(e logEntry) bool { return strings.HasPrefix(e.Message, about) })
	if !ok || e.Message != want {
		t.Fatalf("SIGHUP: lb logged %q (a line found: %v); want %q", e.raw, ok, want)
	}
	return e
}

// writeLBConfig writes text to path, an lb.yaml.
func writeLBConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// getHost sends GET path with Host: host to lb at addr on a new connection, with cookie as
// the Cookie header unless empty, and returns the response with its body read.
func getHost(addr, host, path, cookie string) (*http.Response, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, "", err
	}
	req.Host = host
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := newClient(false).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// waitAnswered sends requests to url, one connection each, until every nginx backend of
// want has answered one; it fails the test at seamDeadline with the last error.
func waitAnswered(t *testing.T, url string, want ...int) {
	t.Helper()
	client := newClient(false)
	seen := map[int]bool{}
	var last error
	ok := waitUntil(seamDeadline, func() bool {
		n, err := backendOf(client, url)
		if err != nil {
			last = err
			return false
		}
		seen[n] = true
		for _, w := range want {
			if !seen[w] {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("within %v, backends %v answered of %v; last error: %v", seamDeadline, seen, want, last)
	}
}

// waitNamesServed is waitAnswered for Go backends that answer their name (answerWith).
func waitNamesServed(t *testing.T, url string, names ...string) {
	t.Helper()
	client := newClient(false)
	seen := map[string]bool{}
	var last error
	ok := waitUntil(seamDeadline, func() bool {
		name, err := nameOf(client, url)
		if err != nil {
			last = err
			return false
		}
		seen[name] = true
		for _, n := range names {
			if !seen[n] {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("within %v, %v answered of %v; last error: %v", seamDeadline, seen, names, last)
	}
}

// servedOnlyBy sends n requests to url, one connection each, and fails the test unless
// every one is answered by one of names and each of names answers one: nothing failed or
// went elsewhere, even for a moment after a change.
func servedOnlyBy(t *testing.T, url string, n int, names ...string) {
	t.Helper()
	client := newClient(false)
	seen := map[string]int{}
	for i := range n {
		name, err := nameOf(client, url)
		if err != nil || !slices.Contains(names, name) {
			t.Fatalf("request %d: %q, %v; want one of %v to answer", i, name, err, names)
		}
		seen[name]++
	}
	for _, name := range names {
		if seen[name] == 0 {
			t.Fatalf("%d requests: %v; want each of %v to answer", n, seen, names)
		}
	}
}

// Pair 1: lb sends PROXY headers (--send-proxy, a pool's send_proxy) to backends that
// check over HTTP: the probes must send the header too, or nginx's proxy_protocol listener
// refuses every probe and no backend ever comes up. And a servers file line that gains
// proxy= takes effect at the reload.
func TestSeamSendProxyWithHTTPChecks(t *testing.T) {
	t.Run("flags", func(t *testing.T) {
		// fails before the app-layer fix: probes send no PROXY header (health uses only a line's proxy=), nginx refuses them, both backends stay down and clients get 503
		ngx := startNginxWith(t, 2, nginxOptions{ProxyProtocol: true})
		for _, b := range ngx {
			b.makeHealthy(t)
		}
		servers := writeServersFile(t, ngx[0].Addr+" id=n1", ngx[1].Addr+" id=n2")
		lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--send-proxy", "v2",
			"--health-http", "/health", "--health-interval", "100ms", "--rise", "1")
		waitAnswered(t, "http://"+lb.Addr+"/", 1, 2)
		if l := proxyLog(t, ngx[0], "GET / "); l.Client.Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("nginx logged client %v for a request through lb, want 127.0.0.1 from lb's v2 header", l.Client)
		}
	})
	t.Run("config", func(t *testing.T) {
		// fails before the app-layer fix: as with the flags: a pool's send_proxy does not reach its probes, the pool's backends stay down
		ngx := startNginxWith(t, 1, nginxOptions{ProxyProtocol: true})
		ngx[0].makeHealthy(t)
		conf := filepath.Join(t.TempDir(), "lb.yaml")
		port := freeport.Get(t)
		writeLBConfig(t, conf, fmt.Sprintf(`listeners:
  - listen: 127.0.0.1:%d
    routes:
      - pool: web
pools:
  web:
    servers: [%s id=n1]
    send_proxy: v1
    health: {http: /health, interval: 100ms, rise: 1}
`, port, ngx[0].Addr))
		startLB(t, nil, "serve", "--config", conf)
		waitAnswered(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 1)
	})
	t.Run("reload adds proxy=", func(t *testing.T) {
		// fails before the app-layer fix: a backend with the same id and address keeps its old options at a reload ("unchanged":1), so no header is sent and nginx refuses the requests
		ngx := startNginxWith(t, 1, nginxOptions{ProxyProtocol: true})
		servers := writeServersFile(t, ngx[0].Addr+" id=n1") // a TCP check needs no header
		lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--health-interval", "100ms", "--rise", "1")
		client := newClient(false)
		if n, err := backendOf(client, "http://"+lb.Addr+"/"); err == nil {
			t.Fatalf("without proxy= nginx answered (backend %d): it does not want a header, the test proves nothing", n)
		}
		if err := os.WriteFile(servers, []byte(ngx[0].Addr+" id=n1 proxy=v2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		hupAndWait(t, lb, "config ", "config reloaded")
		for i := range 4 {
			if n, err := backendOf(client, "http://"+lb.Addr+"/"); err != nil || n != 1 {
				t.Fatalf("request %d after the reload that added proxy=v2: backend %d, %v; want n1 to answer (it got its header)", i, n, err)
			}
		}
	})
}

// Pair 2: discover= lines and reloads. A servers file with a discover= line reloads on
// SIGHUP and on --watch, and the backends found in DNS go on serving; a pool of lb.yaml
// takes discover= lines too.
func TestSeamDiscoverReload(t *testing.T) {
	dns := dnstest.Start(t)
	port := freeport.Get(t)
	podAddr := func(n int) string { return net.JoinHostPort(fmt.Sprintf("127.0.0.%d", 40+n), strconv.Itoa(port)) }
	for n := 1; n <= 2; n++ {
		startTCPBackendOn(t, podAddr(n), answerWith("pod-"+strconv.Itoa(n)))
	}
	dns.SetA("app.seams.test", "127.0.0.41", "127.0.0.42")
	line := "app.seams.test:" + strconv.Itoa(port) + " discover=a\n"

	t.Run("servers file", func(t *testing.T) {
		fixed := startTCPBackend(t, answerWith("fixed"))
		servers := writeServers(t, line)
		lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--resolver", dns.Addr,
			"--resolve-every", "1s", "--health-interval", "100ms", "--rise", "1", "--watch")
		url := "http://" + lb.Addr + "/"
		waitNamesServed(t, url, "pod-1", "pod-2")

		t.Run("SIGHUP", func(t *testing.T) {
			// fails before the app-layer fix: SIGHUP's reload parses the file without discover= ("discover= is not taken here: put the line in the servers file given with -f")
			mark := lb.log.len()
			hupAndWait(t, lb, "config ", "config reloaded")
			// At once, not after the next lookup: the reload keeps what DNS found.
			servedOnlyBy(t, url, 10, "pod-1", "pod-2")
			if e, ok := lb.log.waitFor(mark, 0, func(e logEntry) bool { return strings.HasPrefix(e.Message, "backend gone") }); ok {
				t.Errorf("the reload of an unchanged file took a discovered backend away: %s", e.raw)
			}
		})
		t.Run("watch", func(t *testing.T) {
			// fails before the app-layer fix: --watch's reload refuses the discover= line as SIGHUP's does
			mark := lb.log.len()
			if err := os.WriteFile(servers, []byte(line+fixed.Addr+" id=fixed\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			e, ok := lb.log.waitFor(mark, seamDeadline, func(e logEntry) bool { return strings.HasPrefix(e.Message, "config ") })
			if !ok || e.Message != "config reloaded" {
				t.Fatalf("--watch after the file gained a line: %q (found %v); want \"config reloaded\"", e.raw, ok)
			}
			servedOnlyBy(t, url, 12, "pod-1", "pod-2", "fixed")
		})
	})

	t.Run("config pool", func(t *testing.T) {
		// fails before the app-layer fix: lb.yaml's servers: are parsed without discover= ("discover= is not taken here"), so lb refuses to start
		conf := filepath.Join(t.TempDir(), "lb.yaml")
		lport := freeport.Get(t)
		text := fmt.Sprintf(`listeners:
  - listen: 127.0.0.1:%d
    routes:
      - pool: app
pools:
  app:
    servers: [%q]
    health: {interval: 100ms, rise: 1}
`, lport, strings.TrimSpace(line))
		writeLBConfig(t, conf, text)
		lb := startLB(t, nil, "serve", "--config", conf, "--resolver", dns.Addr, "--resolve-every", "1s")
		url := fmt.Sprintf("http://127.0.0.1:%d/", lport)
		waitNamesServed(t, url, "pod-1", "pod-2")
		hupAndWait(t, lb, "config ", "config reloaded")
		servedOnlyBy(t, url, 10, "pod-1", "pod-2")
		// A new health check makes the pool anew: it must find its backends in DNS again.
		writeLBConfig(t, conf, strings.Replace(text, "interval: 100ms", "interval: 150ms", 1))
		hupAndWait(t, lb, "config ", "config reloaded")
		servedOnlyBy(t, url, 10, "pod-1", "pod-2")
	})
}

// Pair 3: stickiness is per pool, and a reload applies a kept pool's new settings: only the
// pool with sticky_cookie inserts it; a reload that gives the other pool one makes it
// insert it; a reload that changes its balance or its health check applies them.
func TestSeamPerPoolStickyAcrossReloads(t *testing.T) {
	ngx := startNginx(t, 3)
	conf := filepath.Join(t.TempDir(), "lb.yaml")
	port := freeport.Get(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	write := func(b string) {
		t.Helper()
		writeLBConfig(t, conf, fmt.Sprintf(`listeners:
  - listen: %s
    routes:
      - match: {host: a.test}
        pool: a
      - match: {host: b.test}
        pool: b
pools:
  a:
    servers: [%s id=a-1]
    sticky_cookie: lb_a
  b:
    servers: [%s id=b-2, %s id=b-3]
%s`, addr, ngx[0].Addr, ngx[1].Addr, ngx[2].Addr, b))
	}
	write("    health: {http: /, interval: 100ms, rise: 1, fall: 1}\n")
	lb := startLB(t, nil, "serve", "--config", conf)

	cookieOf := func(host string) (string, int) {
		t.Helper()
		resp, body, err := getHost(addr, host, "/", "")
		if err != nil {
			t.Fatalf("GET / on %s: %v", host, err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("GET / on %s: %s %q", host, resp.Status, body)
		}
		n, _ := strconv.Atoi(resp.Header.Get("X-Backend"))
		return resp.Header.Get("Set-Cookie"), n
	}
	if c, _ := cookieOf("a.test"); !strings.HasPrefix(c, "lb_a=a-1") {
		t.Errorf("pool a (sticky_cookie lb_a): Set-Cookie %q, want lb_a=a-1", c)
	}
	seen := map[int]bool{}
	for range 4 {
		c, n := cookieOf("b.test")
		seen[n] = true
		if c != "" {
			t.Errorf("pool b (no sticky_cookie) answered with Set-Cookie %q: it took pool a's cookie", c)
		}
	}
	if !seen[2] || !seen[3] {
		t.Errorf("pool b in round robin: 4 connections reached %v, want backends 2 and 3", seen)
	}

	t.Run("reload adds sticky", func(t *testing.T) {
		write("    sticky_cookie: lb_b\n    health: {http: /, interval: 100ms, rise: 1, fall: 1}\n")
		hupAndWait(t, lb, "config ", "config reloaded")
		if c, n := cookieOf("b.test"); !strings.HasPrefix(c, fmt.Sprintf("lb_b=b-%d", n)) {
			t.Errorf("pool b after the reload that gave it sticky_cookie lb_b: Set-Cookie %q from backend %d, want lb_b=b-%d", c, n, n)
		}
		if c, _ := cookieOf("a.test"); !strings.HasPrefix(c, "lb_a=a-1") {
			t.Errorf("pool a after the reload: Set-Cookie %q, want lb_a=a-1 still", c)
		}
		for i := range 4 {
			resp, _, err := getHost(addr, "b.test", "/", "lb_b=b-3")
			if err != nil || resp.Header.Get("X-Backend") != "3" || resp.Header.Get("Set-Cookie") != "" {
				t.Fatalf("request %d with lb_b=b-3: %v, X-Backend %q, Set-Cookie %q; want b-3, no new cookie", i, err, resp.Header.Get("X-Backend"), resp.Header.Get("Set-Cookie"))
			}
		}
	})
	t.Run("reload adds session_cookie", func(t *testing.T) {
		// fails before the app-layer fix: the session store is opened at start-up only, for the pools that learn sessions then; a pool that gets session_cookie at a reload learns nothing
		write("    session_cookie: PHPSESSID\n    health: {http: /, interval: 100ms, rise: 1, fall: 1}\n")
		hupAndWait(t, lb, "config ", "config reloaded")
		resp, _, err := getHost(addr, "b.test", "/app", "")
		if err != nil {
			t.Fatal(err)
		}
		sess, _, _ := strings.Cut(resp.Header.Get("Set-Cookie"), ";")
		learned := resp.Header.Get("X-Backend")
		if !strings.HasPrefix(sess, "PHPSESSID=") {
			t.Fatalf("nginx's /app set no PHPSESSID through lb: Set-Cookie %q", resp.Header.Get("Set-Cookie"))
		}
		// The session is recorded off the data path: the first request may come before it.
		waitUntil(seamDeadline, func() bool {
			resp, _, err := getHost(addr, "b.test", "/app", sess)
			return err == nil && resp.Header.Get("X-Backend") == learned
		})
		got := map[string]int{}
		for range 6 {
			resp, _, err := getHost(addr, "b.test", "/app", sess)
			if err != nil {
				t.Fatal(err)
			}
			got[resp.Header.Get("X-Backend")]++
		}
		if len(got) != 1 || got[learned] != 6 {
			t.Errorf("6 requests with the session backend %s started: backends %v; want all on %s (pool b learns sessions since the reload)", learned, got, learned)
		}
	})
	t.Run("reload changes balance", func(t *testing.T) {
		write("    balance: source\n    health: {http: /, interval: 100ms, rise: 1, fall: 1}\n")
		hupAndWait(t, lb, "config ", "config reloaded")
		if !waitUntil(seamDeadline, func() bool {
			resp, _, err := getHost(addr, "b.test", "/", "")
			return err == nil && resp.StatusCode == 200
		}) {
			t.Fatalf("pool b does not answer within %v of the reload that changed its balance", seamDeadline)
		}
		got := map[int]int{}
		for range 10 {
			resp, _, err := getHost(addr, "b.test", "/", "")
			if err != nil {
				t.Fatal(err)
			}
			n, _ := strconv.Atoi(resp.Header.Get("X-Backend"))
			got[n]++
		}
		if len(got) != 1 {
			t.Errorf("pool b with balance: source, 10 connections from one client address: backends %v, want one backend", got)
		}
	})
	t.Run("reload changes health", func(t *testing.T) {
		// nginx's /health answers 500 (no backend is made healthy): pool b's backends go down.
		write("    balance: source\n    health: {http: /health, interval: 100ms, rise: 1, fall: 1}\n")
		hupAndWait(t, lb, "config ", "config reloaded")
		var status int
		if !waitUntil(seamDeadline, func() bool {
			resp, _, err := getHost(addr, "b.test", "/", "")
			if err == nil {
				status = resp.StatusCode
			}
			return err == nil && resp.StatusCode == http.StatusServiceUnavailable
		}) {
			t.Errorf("pool b checked at /health, which answers 500: clients still get %d after %v, want 503 (its backends down)", status, seamDeadline)
		}
		if c, _ := cookieOf("a.test"); !strings.HasPrefix(c, "lb_a=a-1") {
			t.Errorf("pool a after pool b went down: Set-Cookie %q, want a-1 to answer with lb_a", c)
		}
	})
}

// Pair 4: behind a trusted balancer (--accept-proxy), a per-address limit counts the client
// each PROXY header declares, not the balancer's address that every connection comes from.
func TestSeamAcceptProxyPerIPLimit(t *testing.T) {
	b := startTCPBackend(t, echo)
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, b.Addr), "--listen", "127.0.0.1:0",
		"--accept-proxy", "127.0.0.0/8", "--per-ip-max-conns", "1")
	dst := netip.MustParseAddrPort(lb.Addr)
	const req = "GET / HTTP/1.1\r\nHost: seams\r\n\r\n"
	// open sends a PROXY v1 header declaring client, then a request, and returns the
	// connection with the first line of what came back: the echoed request, or lb's answer.
	open := func(client string) (*net.TCPConn, string) {
		t.Helper()
		c := dialLB(t, lb.Addr)
		hdr := proxyhdr.AppendV1(nil, netip.MustParseAddrPort(client), dst)
		if _, err := c.Write(append(hdr, req...)); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("connection declaring %s: %v", client, err)
		}
		return c, strings.TrimSpace(line)
	}
	held, first := open("203.0.113.1:40001")
	_, other := open("203.0.113.2:40002")
	_, again := open("203.0.113.1:40003")
	if first != "GET / HTTP/1.1" {
		t.Errorf("the first connection of 203.0.113.1: %q, want it echoed by the backend", first)
	}
	if other != "GET / HTTP/1.1" {
		t.Errorf("203.0.113.2, while 203.0.113.1 holds its one connection: %q, want it echoed (another client, whatever the TCP peer)", other)
	}
	if !strings.HasPrefix(again, "HTTP/1.1 429") {
		t.Errorf("a second connection of 203.0.113.1 while its first is open: %q, want 429 (--per-ip-max-conns 1)", again)
	}
	// Once its connection ends, the declared client may open another.
	held.Close()
	var last string
	if !waitUntil(seamDeadline, func() bool {
		c, line := open("203.0.113.1:40004")
		c.Close()
		last = line
		return line == "GET / HTTP/1.1"
	}) {
		t.Errorf("203.0.113.1 after its one connection closed: %q for %v, want its next connection echoed", last, seamDeadline)
	}
}

// Pair 5: the access log goes on across a config reload: one line per connection, with the
// pool and backend of the config each connection was routed by.
func TestSeamAccessLogAcrossReload(t *testing.T) {
	ngx := startNginx(t, 2)
	conf := filepath.Join(t.TempDir(), "lb.yaml")
	port := freeport.Get(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	write := func(pool string) {
		t.Helper()
		writeLBConfig(t, conf, fmt.Sprintf(`listeners:
  - listen: %s
    routes:
      - match: {host: a.test}
        pool: %s
pools:
  one: {servers: [%s id=one-1]}
  two: {servers: [%s id=two-2]}
`, addr, pool, ngx[0].Addr, ngx[1].Addr))
	}
	write("one")
	path := filepath.Join(t.TempDir(), "access.log")
	lb := startLB(t, nil, "serve", "--config", conf, "--access-log", path)
	type line struct{ Pool, Backend string }
	lines := func() []line {
		data, _ := os.ReadFile(path)
		var out []line
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var e line
			if json.Unmarshal([]byte(l), &e) == nil {
				out = append(out, e)
			}
		}
		return out
	}
	send := func(n int) {
		t.Helper()
		for i := range n {
			if resp, body, err := getHost(addr, "a.test", "/", ""); err != nil || resp.StatusCode != 200 {
				t.Fatalf("request %d: %v %q", i, err, body)
			}
		}
	}
	waitLines := func(n int) []line {
		t.Helper()
		var got []line
		if !waitUntil(seamDeadline, func() bool { got = lines(); return len(got) >= n }) {
			t.Fatalf("the access log has %d lines after %v, want %d: %v", len(got), seamDeadline, n, got)
		}
		return got
	}
	const before, after = 3, 4
	send(before)
	waitLines(before)
	write("two")
	hupAndWait(t, lb, "config ", "config reloaded")
	send(after)
	got := waitLines(before + after)
	counts := map[line]int{}
	for _, l := range got {
		counts[l]++
	}
	want := map[line]int{{"one", "one-1"}: before, {"two", "two-2"}: after}
	if len(got) != before+after || fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("access log after %d connections, a reload and %d more: %d lines %v; want %v", before, after, len(got), counts, want)
	}
}

// Pair 6: the admin API and /metrics follow a config reload: the backends of a pool it
// adds are listed and measured, those of a pool it removes are gone.
func TestSeamAdminAndMetricsAfterReload(t *testing.T) {
	ngx := startNginx(t, 3)
	conf := filepath.Join(t.TempDir(), "lb.yaml")
	port := freeport.Get(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	write := func(second, server string) {
		t.Helper()
		writeLBConfig(t, conf, fmt.Sprintf(`listeners:
  - listen: %s
    routes:
      - match: {host: b.test}
        pool: %s
      - pool: one
pools:
  one: {servers: [%s id=one-1]}
  %s: {servers: [%s]}
`, addr, second, ngx[0].Addr, second, server))
	}
	write("gone", ngx[2].Addr+" id=gone-3")
	admin := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	lb := startLB(t, nil, "serve", "--config", conf, "--admin-listen", admin, "--health-interval", "100ms", "--rise", "1")
	if resp, body, err := getHost(addr, "b.test", "/", ""); err != nil || resp.StatusCode != 200 {
		t.Fatalf("b.test before the reload: %v %q", err, body)
	}

	write("two", ngx[1].Addr+" id=two-2")
	hupAndWait(t, lb, "config ", "config reloaded")
	if resp, body, err := getHost(addr, "b.test", "/", ""); err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "2" {
		t.Fatalf("b.test after the reload: %v %q, want backend 2 of pool two", err, body)
	}

	listed := func() []string {
		var list []struct{ Pool, ID string }
		adminGet(t, admin, "", "/backends", &list)
		var out []string
		for _, b := range list {
			out = append(out, b.Pool+"/"+b.ID)
		}
		slices.Sort(out)
		return out
	}
	var got []string
	if !waitUntil(seamDeadline, func() bool { got = listed(); return slices.Equal(got, []string{"one/one-1", "two/two-2"}) }) {
		t.Errorf("GET /backends after the reload: %v, want one/one-1 and two/two-2 (gone-3's pool was removed)", got)
	}

	measured := func() map[string]bool {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		ids := map[string]bool{}
		for _, l := range strings.Split(string(body), "\n") {
			if rest, ok := strings.CutPrefix(l, `lb_backend_up{backend="`); ok {
				id, _, _ := strings.Cut(rest, `"`)
				ids[id] = true
			}
		}
		return ids
	}
	var ids map[string]bool
	if !waitUntil(seamDeadline, func() bool { ids = measured(); return ids["one-1"] && ids["two-2"] && !ids["gone-3"] }) {
		t.Errorf("lb_backend_up in /metrics after the reload: %v; want one-1 and two-2, and gone-3 gone", ids)
	}
}

// Pair 7: a draining lb says it is not ready (a load balancer in front stops sending it
// clients) while it is alive (no orchestrator kills it): /readyz 503, /healthz 200, until
// the connection it drains ends and it exits.
func TestSeamDrainReadyz(t *testing.T) {
	b := startTCPBackend(t, echo)
	admin := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, b.Addr), "--listen", "127.0.0.1:0",
		"--admin-listen", admin, "--drain-timeout", "10s")
	c := holdOpen(t, lb.Addr)
	if s := adminGet(t, admin, "", "/readyz", nil); s != 200 {
		t.Fatalf("GET /readyz before SIGTERM: %d, want 200", s)
	}
	mark := lb.log.len()
	lb.signal(t, syscall.SIGTERM)
	if _, ok := lb.log.waitFor(mark, seamDeadline, func(e logEntry) bool { return strings.HasPrefix(e.Message, "shutting down") }); !ok {
		t.Fatalf("lb did not log \"shutting down\" within %v of SIGTERM", seamDeadline)
	}
	for i := range 3 {
		if s := adminGet(t, admin, "", "/readyz", nil); s != http.StatusServiceUnavailable {
			t.Errorf("GET /readyz %d while draining: %d, want 503", i, s)
		}
		if s := adminGet(t, admin, "", "/healthz", nil); s != 200 {
			t.Errorf("GET /healthz %d while draining: %d, want 200", i, s)
		}
		if err := roundTrip(c, "still draining\n"); err != nil {
			t.Fatalf("the held connection while draining: %v", err)
		}
	}
	c.Close()
	lb.wait(t, seamDeadline)
}

// Pair 8: a reload that keeps a backend's id and changes its address sends new
// connections to the new address, while a connection open on the old one goes on.
func TestSeamReloadMovesBackendAddress(t *testing.T) {
	ngx := startNginx(t, 2)
	servers := writeServersFile(t, ngx[0].Addr+" id=app")
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--health-interval", "100ms", "--rise", "1")
	held := connTo(t, lb.Addr, 1)
	if err := os.WriteFile(servers, []byte(ngx[1].Addr+" id=app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hupAndWait(t, lb, "config ", "config reloaded")
	client := newClient(false)
	for i := range 5 {
		if n, err := backendOf(client, "http://"+lb.Addr+"/"); err != nil || n != 2 {
			t.Errorf("new connection %d after app moved to backend 2's address: backend %d, %v", i, n, err)
		}
	}
	for i := range 3 {
		if n, _, err := held.get(i == 2); err != nil || n != 1 {
			t.Errorf("request %d on the connection open to app's old address: backend %d, %v; want 1 still", i, n, err)
		}
	}
}
