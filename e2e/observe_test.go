package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"lb/internal/freeport"
	"lb/internal/metricstest"
)

// TestMetricsCountWhatHappened: the binary's /metrics, scraped by a real HTTP client, counts
// 30 requests over 3 nginx backends as 10 connections each, with the bytes each way; then a
// killed backend's failed dials and the retries they cause.
func TestMetricsCountWhatHappened(t *testing.T) {
	ngx := startNginx(t, 3)
	admin := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	var lines []string
	for i, b := range ngx {
		lines = append(lines, fmt.Sprintf("%s id=web-%d", b.Addr, i+1))
	}
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, lines...), "--listen", "127.0.0.1:0",
		"--admin-listen", admin, "--health-interval", "1h")
	const req = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
	var down [3]int
	for i := range 30 {
		c, err := net.Dial("tcp", lb.Addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, req)
		b, _ := io.ReadAll(c)
		c.Close()
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(b))), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
		n := int(resp.Header.Get("X-Backend")[0] - '1')
		down[n] += len(b)
	}
	url := "http://" + admin + "/metrics"
	ctx, cancel := context.WithTimeout(context.Background(), startDeadline)
	defer cancel()
	key := metricstest.Key
	v, err := metricstest.Wait(ctx, url, func(v metricstest.Values) bool { return v[key("lb_active_connections", "listener", lb.Addr)] == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if got := v[key("lb_accepted_connections_total", "listener", lb.Addr)]; got != 30 {
		t.Errorf("accepted %v, want 30", got)
	}
	for i := range ngx {
		id := fmt.Sprintf("web-%d", i+1)
		if got := v[key("lb_backend_connections_total", "backend", id, "pool", "default")]; got != 10 {
			t.Errorf("%s: %v connections, want 10", id, got)
		}
		if got := v[key("lb_backend_sent_bytes_total", "backend", id, "pool", "default")]; got != float64(10*len(req)) {
			t.Errorf("%s: %v bytes sent, want %d", id, got, 10*len(req))
		}
		if got := v[key("lb_backend_received_bytes_total", "backend", id, "pool", "default")]; got != float64(down[i]) {
			t.Errorf("%s: %v bytes received, want %d, what its clients read", id, got, down[i])
		}
		if got := v[key("lb_backend_http_connections_total", "backend", id, "method", "GET", "pool", "default")]; got != 10 {
			t.Errorf("%s: %v GET connections, want 10", id, got)
		}
		if got := v[key("lb_health_probe_duration_seconds_count", "pool", "default")]; got < 1 {
			t.Errorf("%s: %v probes timed, want the first one at least", id, got)
		}
		if got := v[key("lb_backend_up", "backend", id, "pool", "default")]; got != 1 {
			t.Errorf("%s: up %v, want 1", id, got)
		}
	}

	// web-1 dies: the dials to it fail (before health notices: probes are an hour apart),
	// and each is retried on the next backend.
	ngx[0].stop(t)
	for range 6 {
		c, err := net.Dial("tcp", lb.Addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, req)
		io.ReadAll(c)
		c.Close()
	}
	v, err = metricstest.Wait(ctx, url, func(v metricstest.Values) bool { return v[key("lb_active_connections", "listener", lb.Addr)] == 0 })
	if err != nil {
		t.Fatal(err)
	}
	dialErrs := v[key("lb_backend_dial_errors_total", "backend", "web-1", "pool", "default")]
	retries := v[key("lb_backend_retries_total", "backend", "web-2", "pool", "default")] + v[key("lb_backend_retries_total", "backend", "web-3", "pool", "default")]
	if dialErrs < 1 || retries != dialErrs {
		t.Errorf("web-1: %v dial errors, %v retries on the others: want at least 1, and as many retries", dialErrs, retries)
	}
}

// TestAccessLogFromTheBinary: N connections through lb give N access log lines in the file.
func TestAccessLogFromTheBinary(t *testing.T) {
	ngx := startNginx(t, 1)
	path := t.TempDir() + "/access.log"
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, ngx[0].Addr+" id=web"), "--listen", "127.0.0.1:0",
		"--access-log", path)
	for i := range 5 {
		c, err := net.Dial("tcp", lb.Addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /n/%d HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", i)
		io.ReadAll(c)
		c.Close()
	}
	var data []byte
	if !waitUntil(startDeadline, func() bool {
		data, _ = os.ReadFile(path)
		return strings.Count(string(data), "\n") == 5
	}) {
		t.Fatalf("access log:\n%s\nwant 5 lines", data)
	}
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		for _, want := range []string{`"backend":"web"`, fmt.Sprintf(`"path":"/n/%d"`, i), `"host":"shop.test"`, `"method":"GET"`, `"sniff":"http1"`} {
			if !strings.Contains(line, want) {
				t.Errorf("line %d %s: no %s", i, line, want)
			}
		}
	}
}
