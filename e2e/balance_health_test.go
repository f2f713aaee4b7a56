package e2e

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// probeRow returns the fields of the probe table row of addr: BACKEND ID STATE STATUS ...
func probeRow(table, addr string) []string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[0] == addr {
			return f
		}
	}
	return nil
}

// makeHealthy makes nginx's /health answer 200 instead of 500.
func (b *nginxBackend) makeHealthy(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(b.prefix, "healthy"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lb probe --health-http GETs the path and shows the status: 500 is down, 200 up. Backends
// listening with proxy_protocol take the probe's v2 LOCAL (or v1 UNKNOWN) header and
// answer; without the header nginx refuses the request.
func TestProbeHTTP(t *testing.T) {
	ngx := startNginxWith(t, 2, nginxOptions{ProxyPort: true})
	servers := writeServersFile(t,
		ngx[0].Addr+" id=plain",
		ngx[0].ProxyAddr+" id=v2 proxy=v2 check=http:/health",
		ngx[1].ProxyAddr+" id=v1 proxy=v1 check=http:/health",
		ngx[1].Addr+" id=tcp check=tcp",
	)
	want := func(stdout, addr, state, status string) {
		t.Helper()
		if f := probeRow(stdout, addr); f == nil || f[2] != state || f[3] != status {
			t.Errorf("%s: row %q, want %s with status %s; table:\n%s", addr, f, state, status, stdout)
		}
	}
	stdout, stderr, status := runLB(t, "probe", "-f", servers, "--health-http", "/health")
	if status != 1 {
		t.Errorf("probe with /health at 500: exit status %d, want 1; stderr: %s", status, stderr)
	}
	want(stdout, ngx[0].Addr, "down", "500")
	want(stdout, ngx[0].ProxyAddr, "up", "200")
	want(stdout, ngx[1].ProxyAddr, "up", "200")
	want(stdout, ngx[1].Addr, "up", "-")

	ngx[0].makeHealthy(t)
	stdout, stderr, status = runLB(t, "probe", "-f", servers, "--health-http", "/health")
	if status != 0 {
		t.Errorf("probe with /health at 200: exit status %d, want 0; stderr: %s", status, stderr)
	}
	want(stdout, ngx[0].Addr, "up", "200")

	// --health-expect-status narrows what counts as up; LB_HEALTH_EXPECT_STATUS is the same.
	stdout, _, status = runLB(t, "probe", "-f", writeServersFile(t, ngx[0].Addr), "--health-http", "/health", "--health-expect-status", "204")
	if status != 1 {
		t.Errorf("probe wanting 204: exit status %d, want 1", status)
	}
	want(stdout, ngx[0].Addr, "down", "200")

	// Without the header, nginx's proxy_protocol listener takes the request for a broken one.
	stdout, _, status = runLB(t, "probe", "-f", writeServersFile(t, ngx[0].ProxyAddr+" check=http:/health"))
	if f := probeRow(stdout, ngx[0].ProxyAddr); status != 1 || f == nil || f[2] != "down" {
		t.Errorf("probe of a proxy_protocol listener without proxy=: exit %d, row %q; want down", status, f)
	}
}

// lb serve --health-http: a backend whose /health answers 500 gets no client; once it
// answers 200 it comes up and gets its share.
func TestServeHTTPHealth(t *testing.T) {
	ngx, lb := healthCheckedPair(t, "--fall", "1")
	if e, _ := lb.log.waitFor(0, 0, func(e logEntry) bool { return e.Message == "listening" }); e.Up == nil || *e.Up != 1 {
		t.Fatalf("lb started with other than 1 backend up (two's /health says 500): %s", e.raw)
	}
	client := newClient(false)
	for i := range 10 {
		if n, err := backendOf(client, "http://"+lb.Addr+"/"); err != nil || n != 1 {
			t.Fatalf("request %d: backend %d, %v; want 1 while two's /health says 500", i, n, err)
		}
	}
	from := lb.log.len()
	ngx[1].makeHealthy(t)
	if _, ok := lb.log.waitFor(from, startDeadline, func(e logEntry) bool { return e.Message == "backend up" && e.ID == "two" }); !ok {
		t.Fatal("two did not come up once its /health said 200")
	}
	counts := map[int]int{}
	for range 20 {
		n, err := backendOf(client, "http://"+lb.Addr+"/")
		if err != nil {
			t.Fatal(err)
		}
		counts[n]++
	}
	if counts[1] != 10 || counts[2] != 10 {
		t.Errorf("after two came up: counts %v, want 10 each", counts)
	}
}

// Shares by weight on real sockets, one connection per request: exact for round robin;
// for random and p2c (idle, so p2c's draws decide) within 4 standard deviations of the
// binomial expectation, which a correct lb misses about once in 16,000 runs.
func TestBalanceShares(t *testing.T) {
	ngx := startNginx(t, 3)
	servers := writeServersFile(t, ngx[0].Addr+" weight=1", ngx[1].Addr+" weight=2", ngx[2].Addr+" weight=3")
	for _, tc := range []struct {
		balance string
		n       int
		exact   bool
	}{
		{"roundrobin", 60, true},
		{"random", 600, false},
		{"p2c", 600, false},
	} {
		lb := startLB(t, []string{"LB_BALANCE=" + tc.balance}, "serve", "-f", servers, "--listen", "127.0.0.1:0")
		client := newClient(false)
		counts := map[int]int{}
		for range tc.n {
			n, err := backendOf(client, "http://"+lb.Addr+"/")
			if err != nil {
				t.Fatalf("%s: %v", tc.balance, err)
			}
			counts[n]++
		}
		for b, w := range map[int]int{1: 1, 2: 2, 3: 3} {
			p := float64(w) / 6
			want := float64(tc.n) * p
			tol := 4 * math.Sqrt(float64(tc.n)*p*(1-p))
			if tc.exact {
				tol = 0
			}
			if math.Abs(float64(counts[b])-want) > tol {
				t.Errorf("%s: backend %d (weight %d) got %d of %d, want %.0f ± %.0f", tc.balance, b, w, counts[b], tc.n, want, tol)
			}
		}
		t.Logf("%s: %v", tc.balance, counts)
		lb.stop(t)
	}
}

// --balance foo and proxy=v3 stop lb with exit 2, naming what is allowed.
func TestBadBalanceInput(t *testing.T) {
	servers := writeServersFile(t, fmt.Sprintf("127.0.0.1:%d", 1))
	stderr, status := runRefused(t, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--balance", "foo")
	if status != 2 || !strings.Contains(stderr, "--balance foo: want roundrobin, leastconn, p2c, source or random") {
		t.Errorf("--balance foo: exit %d, stderr %q", status, stderr)
	}
	bad := writeServersFile(t, "127.0.0.1:1 proxy=v3")
	stderr, status = runRefused(t, "serve", "-f", bad, "--listen", "127.0.0.1:0")
	if status != 2 || !strings.Contains(stderr, `:1: bad proxy "v3": want v1 or v2`) {
		t.Errorf("proxy=v3: exit %d, stderr %q", status, stderr)
	}
}

// --slow-start: a backend that comes up gets measurably fewer connections than its peer
// early in its ramp (about 10% of the peer's share at first), and the log says it ramps.
func TestSlowStartShares(t *testing.T) {
	ngx, lb := healthCheckedPair(t, "--slow-start", "60s")
	from := lb.log.len()
	ngx[1].makeHealthy(t)
	up, ok := lb.log.waitFor(from, startDeadline, func(e logEntry) bool { return e.Message == "backend up" && e.ID == "two" })
	if !ok {
		t.Fatal("two did not come up once its /health said 200")
	}
	if f := fields(t, up); f["slow_start"] == nil {
		t.Errorf("backend up line %s: want slow_start", up.raw)
	}
	client := newClient(false)
	counts := map[int]int{}
	for range 200 {
		n, err := backendOf(client, "http://"+lb.Addr+"/")
		if err != nil {
			t.Fatal(err)
		}
		counts[n]++
	}
	// Within the first seconds of a 60s ramp, two's weight is 10% to 20% of one's.
	if counts[2] == 0 || counts[2] > counts[1]/3 {
		t.Errorf("early in two's ramp: counts %v, want two at about a tenth of one's share", counts)
	}
	t.Logf("early in the ramp: %v", counts)
}

// healthCheckedPair starts two nginx backends, one (id one) answering /health with 200 and
// the other (id two) with 500, and lb checking /health every 50 ms, up at the first good
// answer, with extra flags.
func healthCheckedPair(t *testing.T, extra ...string) ([]*nginxBackend, *lbProcess) {
	t.Helper()
	ngx := startNginx(t, 2)
	ngx[0].makeHealthy(t)
	servers := writeServersFile(t, ngx[0].Addr+" id=one", ngx[1].Addr+" id=two")
	args := []string{"serve", "-f", servers, "--listen", "127.0.0.1:0", "--health-http", "/health",
		"--health-interval", "50ms", "--rise", "1"}
	return ngx, startLB(t, nil, append(args, extra...)...)
}
