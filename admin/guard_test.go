package admin

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"lb/control"
)

// send sends one request to h with the given headers (Host among them) and returns the
// status and body.
func send(t *testing.T, h http.Handler, method, path, body string, header map[string]string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, "http://127.0.0.1:9090"+path, strings.NewReader(body))
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// TestCrossOriginChangesRefused: what a page of another origin can make a browser send (a
// form, a no-cors fetch, from another site or another port of 127.0.0.1) changes nothing;
// the status page's own calls (same origin) and non-browser clients (no Sec-Fetch-Site, no
// Origin) still do.
func TestCrossOriginChangesRefused(t *testing.T) {
	json := map[string]string{"Content-Type": "application/json"}
	for _, c := range []struct {
		name, method, path, body string
		header                   map[string]string
	}{
		{"form from another site", "POST", "/backends/a/drain", "", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"}},
		{"fetch from another port", "POST", "/backends", `{"addr": "127.0.0.1:6666"}`, map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:8080", "Content-Type": "application/json"}},
		{"old browser, Origin only", "POST", "/backends/a/drain", "", map[string]string{"Origin": "http://evil.example"}},
		{"delete from another site", "DELETE", "/backends/a", "", map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"patch from another site", "PATCH", "/backends/a", `{"weight": 9}`, map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}},
	} {
		tab := newTable()
		h := New(Config{Backends: tab})
		before := tab.List()
		status, body := send(t, h, c.method, c.path, c.body, c.header)
		if status != http.StatusForbidden || !strings.Contains(body, "cross-origin request refused") {
			t.Errorf("%s: %s %s = %d %s; want 403 saying why", c.name, c.method, c.path, status, body)
		}
		if after := tab.List(); len(after) != len(before) || after[0] != before[0] {
			t.Errorf("%s: the refused call changed the backends to %+v", c.name, after)
		}
	}
	tab := newTable()
	h := New(Config{Backends: tab})
	if status, body := send(t, h, "POST", "/backends/a/drain", "", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:9090"}); status != 200 {
		t.Errorf("the status page's own drain = %d %s, want 200", status, body)
	}
	if status, body := send(t, h, "POST", "/backends", `{"addr": "127.0.0.1:7000"}`, json); status != 201 {
		t.Errorf("POST /backends from curl = %d %s, want 201", status, body)
	}
	if status, _ := send(t, h, "GET", "/backends", "", map[string]string{"Sec-Fetch-Site": "cross-site"}); status != 200 {
		t.Errorf("a cross-site GET /backends = %d; want 200 (a browser lets the page read nothing of it, and it changes nothing)", status)
	}
}

// TestBodiesOnlyAsJSON: a state change whose body is not JSON (text/plain: what a no-cors
// fetch sends; a form's types, even with no fields) is 415 and changes nothing.
func TestBodiesOnlyAsJSON(t *testing.T) {
	for _, c := range []struct {
		method, path, body, ctype string
	}{
		{"POST", "/backends", `{"addr": "127.0.0.1:6666", "weight": 1000}`, "text/plain;charset=UTF-8"},
		{"POST", "/backends", `{"addr": "127.0.0.1:6666"}`, ""}, // a body with no type
		{"POST", "/backends", "addr=127.0.0.1:6666", "application/x-www-form-urlencoded"},
		{"POST", "/backends/a/drain", "", "application/x-www-form-urlencoded"}, // a form without fields
		{"POST", "/backends/a/drain", "", "multipart/form-data; boundary=x"},
		{"PATCH", "/backends/a", `{"weight": 9}`, "text/plain"},
		{"DELETE", "/backends/a", "x", "text/plain"},
	} {
		tab := newTable()
		h := New(Config{Backends: tab})
		header := map[string]string{}
		if c.ctype != "" {
			header["Content-Type"] = c.ctype
		}
		status, body := send(t, h, c.method, c.path, c.body, header)
		if status != http.StatusUnsupportedMediaType || !strings.Contains(body, "Content-Type: application/json") {
			t.Errorf("%s %s as %q = %d %s; want 415 saying to send JSON", c.method, c.path, c.ctype, status, body)
		}
		if after := tab.List(); len(after) != 2 || after[0].State != control.Up || after[0].Weight != 1 {
			t.Errorf("%s %s as %q changed the backends to %+v", c.method, c.path, c.ctype, after)
		}
	}
	h := New(Config{Backends: newTable()})
	if status, body := send(t, h, "POST", "/backends", `{"addr": "127.0.0.1:7000"}`, map[string]string{"Content-Type": "application/json; charset=utf-8"}); status != 201 {
		t.Errorf("POST /backends as application/json; charset=utf-8 = %d %s, want 201", status, body)
	}
	if status, body := send(t, h, "POST", "/backends/a/drain", "", nil); status != 200 {
		t.Errorf("a drain with no body and no type (lb drain) = %d %s, want 200", status, body)
	}
}

// TestForeignHostRefusedWithoutToken: without a token, a Host that is not this machine
// (what a DNS-rebound page sends) reads nothing; with a token the token decides.
func TestForeignHostRefusedWithoutToken(t *testing.T) {
	h := New(Config{Backends: newTable()})
	for _, host := range []string{"evil.example", "evil.example:9090", "127.0.0.1.evil.example", "localhost.evil.example", "10.0.0.1:9090", ""} {
		for _, path := range []string{"/backends", "/stats", "/", "/healthz"} {
			status, body := send(t, h, "GET", path, "", map[string]string{"Host": host})
			if status != http.StatusForbidden || !strings.Contains(body, "--admin-token") || !strings.Contains(body, "localhost") {
				t.Errorf("GET %s with Host %q = %d %s; want 403 saying to use localhost or set --admin-token", path, host, status, body)
			}
		}
	}
	for _, host := range []string{"localhost", "localhost:9090", "LocalHost.:9090", "127.0.0.1:9090", "127.0.0.2", "[::1]:9090", "[::1]", "[::ffff:127.0.0.1]:9090"} {
		if status, body := send(t, h, "GET", "/backends", "", map[string]string{"Host": host}); status != 200 {
			t.Errorf("GET /backends with Host %q = %d %s, want 200", host, status, body)
		}
	}
	own := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 9090}
	if !localHost("192.0.2.7:9090", own) || localHost("192.0.2.8:9090", own) {
		t.Error("localHost: want the listener's own address taken, and only it")
	}

	withToken := New(Config{Backends: newTable(), Token: "s3cret"})
	status, _ := send(t, withToken, "GET", "/backends", "", map[string]string{"Host": "lb.example:9090", "Authorization": "Bearer s3cret"})
	if status != 200 {
		t.Errorf("GET /backends with Host lb.example and the token = %d, want 200", status)
	}
	if status, _ := send(t, withToken, "GET", "/backends", "", map[string]string{"Host": "lb.example:9090"}); status != 401 {
		t.Errorf("GET /backends with Host lb.example, no token = %d, want 401", status)
	}
}

// TestMetricsHandlerServesOnlyMetricsAndProbes: the metrics listener's handler answers
// /metrics, /healthz and /readyz to anyone, and nothing else.
func TestMetricsHandlerServesOnlyMetricsAndProbes(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "lb_up 1\n") })
	tab := newTable()
	h := New(Config{Backends: tab, Token: "s3cret", Metrics: metrics}).MetricsHandler()
	foreign := map[string]string{"Host": "10.1.2.3:9100"}
	for path, want := range map[string]string{"/metrics": "lb_up 1\n", "/healthz": "ok\n", "/readyz": "ok\n"} {
		if status, body := send(t, h, "GET", path, "", foreign); status != 200 || body != want {
			t.Errorf("GET %s without a token = %d %q, want 200 %q", path, status, body, want)
		}
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/backends", 404}, {"GET", "/stats", 404}, {"GET", "/", 404}, {"GET", "/metrics/x", 404},
		{"POST", "/backends/a/drain", 404}, {"DELETE", "/backends/a", 404},
		{"POST", "/metrics", 405}, {"PUT", "/healthz", 405}, {"DELETE", "/readyz", 405},
	} {
		if status, _ := send(t, h, c.method, c.path, "", foreign); status != c.status {
			t.Errorf("%s %s on the metrics listener = %d, want %d", c.method, c.path, status, c.status)
		}
	}
	if tab.List()[0].State != control.Up {
		t.Errorf("the metrics listener changed a backend: %+v", tab.List()[0])
	}
}
