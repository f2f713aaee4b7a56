package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"lb/internal/freeport"
	"lb/internal/tlstest"
)

// TestRoutingThroughTheBinary is issue 16's proof with real parts: two listeners in one lb;
// on the TLS one, curl reaches the nginx backend of each server name and verifies its
// certificate (so the bytes went through untouched), and h2 and http/1.1 clients go to
// different pools; on the HTTP one, Host and path prefix choose the pool, lb's sticky
// cookie is per pool, and an unknown host gets 503.
func TestRoutingThroughTheBinary(t *testing.T) {
	curl := requireTool(t, "curl")
	certA, certB := tlstest.NewCert(t, "a.test"), tlstest.NewCert(t, "b.test", "*.b.test")
	tlsA, tlsB := tlstest.StartNginx(t, 1, certA), tlstest.StartNginx(t, 2, certB)
	tlsH2 := tlstest.StartNginx(t, 3, certA)
	web := startNginx(t, 2)
	api := startNginx(t, 1)
	tlsPort, httpPort := freeport.Get(t), freeport.Get(t)
	conf := filepath.Join(t.TempDir(), "lb.yaml")
	yaml := fmt.Sprintf(`listeners:
  - listen: 127.0.0.1:%d
    routes:
      - match: {sni: a.test, alpn: h2}
        pool: tls-h2
      - match: {sni: a.test}
        pool: tls-a
      - match: {sni: "*.b.test"}
        pool: tls-b
  - listen: 127.0.0.1:%d
    routes:
      - match: {host: a.test, path_prefix: /files/}
        pool: api
      - match: {host: a.test}
        pool: web
pools:
  web:
    servers: [%s id=web-1, %s id=web-2]
    sticky_cookie: lb_web
  api:
    servers: [%s id=api-1]
    sticky_cookie: lb_api
  tls-a: {servers: [%s]}
  tls-b: {servers: [%s]}
  tls-h2: {servers: [%s]}
`, tlsPort, httpPort, web[0].Addr, web[1].Addr, api[0].Addr, tlsA.Addr, tlsB.Addr, tlsH2.Addr)
	if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	startLB(t, nil, "serve", "--config", conf, "--admin-listen", admin)

	// The admin API lists the backends of every pool, each with its pool.
	resp, err := http.Get("http://" + admin + "/backends")
	if err != nil {
		t.Fatal(err)
	}
	var listed []struct{ Pool, ID string }
	err = json.NewDecoder(resp.Body).Decode(&listed)
	resp.Body.Close()
	pools := map[string]int{}
	for _, b := range listed {
		pools[b.Pool]++
	}
	if err != nil || len(listed) != 6 || pools["web"] != 2 || pools["api"] != 1 || pools["tls-h2"] != 1 {
		t.Errorf("GET /backends: %+v (%v), want the 6 backends of the 5 pools", listed, err)
	}

	tlsGet := func(name, ca string, alpn ...string) string {
		t.Helper()
		args := []string{"-sS", "--max-time", "10", "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", name, tlsPort), "--cacert", ca}
		args = append(args, alpn...)
		out, err := exec.Command(curl, append(args, fmt.Sprintf("https://%s:%d/", name, tlsPort))...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl https://%s: %v: %s", name, err, out)
		}
		return string(out)
	}
	for _, tc := range []struct{ name, ca, alpn, want string }{
		{"a.test", certA.CertFile, "--http1.1", "tls-backend-1 sni=a.test alpn=http/1.1"},
		{"x.b.test", certB.CertFile, "--http1.1", "tls-backend-2 sni=x.b.test"},
		{"a.test", certA.CertFile, "--http2", "tls-backend-3 sni=a.test alpn=h2"},
	} {
		if got := tlsGet(tc.name, tc.ca, tc.alpn); !strings.Contains(got, tc.want) {
			t.Errorf("%s %s: %q, want %q", tc.name, tc.alpn, got, tc.want)
		}
	}

	httpGet := func(host, path, cookie string) string {
		t.Helper()
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n", path, host, cookie)
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := httpGet("a.test", "/", ""); !strings.Contains(got, "Set-Cookie: lb_web=web-") {
		t.Errorf("a.test /: %q, want pool web with its cookie", got)
	}
	// api-1 has no /files/x: nginx's 404 is its answer all the same, with pool api's cookie.
	if got := httpGet("a.test", "/files/x", ""); !strings.Contains(got, "Set-Cookie: lb_api=api-1") {
		t.Errorf("a.test /files/x: %q, want pool api", got)
	}
	// Pool web's cookie on a route to pool api names nothing there: api's ring decides.
	if got := httpGet("a.test", "/files/x", "Cookie: lb_web=web-2\r\n"); !strings.Contains(got, "Set-Cookie: lb_api=api-1") {
		t.Errorf("pool web's cookie sent to pool api: %q, want api's backend and cookie", got)
	}
	if got := httpGet("a.test", "/", "Cookie: lb_web=web-2\r\n"); !strings.Contains(got, "backend-2") || strings.Contains(got, "Set-Cookie: lb_web") {
		t.Errorf("pool web's cookie for web-2: %q, want web-2 and no new cookie", got)
	}
	if got := httpGet("c.test", "/", ""); !strings.HasPrefix(got, "HTTP/1.1 503") {
		t.Errorf("unknown host: %q, want 503", got)
	}
}

// TestConfigReloadOnSIGHUP: SIGHUP reloads the config file; new routes and pools take new
// connections while a keep-alive connection routed before stays with its backend; a config
// with a mistake changes nothing and the log says where the mistake is.
func TestConfigReloadOnSIGHUP(t *testing.T) {
	ngx := startNginx(t, 2)
	port := freeport.Get(t)
	conf := filepath.Join(t.TempDir(), "lb.yaml")
	write := func(pool, extra string) {
		t.Helper()
		yaml := fmt.Sprintf("listeners:\n  - listen: 127.0.0.1:%d\n    routes:\n      - match: {host: a.test}\n        pool: %s\n%spools:\n  one: {servers: [%s]}\n  two: {servers: [%s]}\n",
			port, pool, extra, ngx[0].Addr, ngx[1].Addr)
		if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("one", "")
	lb := startLB(t, nil, "serve", "--config", conf)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ask := func(c net.Conn, r *bufio.Reader) string {
		t.Helper()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldR := bufio.NewReader(held)
	if got := ask(held, heldR); got != "1" {
		t.Fatalf("before the reload: backend %q, want 1", got)
	}

	write("two", "")
	from := lb.log.len()
	lb.signal(t, syscall.SIGHUP)
	if _, ok := lb.log.waitFor(from, startDeadline, func(e logEntry) bool { return e.Message == "config reloaded" }); !ok {
		t.Fatalf("no \"config reloaded\" line:\n%s", lb.log)
	}
	fresh, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if got := ask(fresh, bufio.NewReader(fresh)); got != "2" {
		t.Errorf("a new connection after the reload: backend %q, want 2", got)
	}
	if got := ask(held, heldR); got != "1" {
		t.Errorf("the connection routed before the reload: backend %q, want still 1", got)
	}

	write("three", "")
	from = lb.log.len()
	lb.signal(t, syscall.SIGHUP)
	e, ok := lb.log.waitFor(from, startDeadline, func(e logEntry) bool { return e.Message == "config not reloaded: nothing changed" })
	if !ok || !strings.Contains(e.raw, "lb.yaml:5:") {
		t.Fatalf("a config routing to an unknown pool: %q, want the error at lb.yaml:5", e.raw)
	}
	again, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got := ask(again, bufio.NewReader(again)); got != "2" {
		t.Errorf("after a bad reload: backend %q, want 2 as before it", got)
	}
}
