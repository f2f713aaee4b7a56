package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"lb/control"
	"lb/ring"
)

// table is a Backends kept in a slice: enough to check what the handlers ask of it. The real
// one (package control, over a ring) is tested with this server in control's tests.
type table struct {
	mu   sync.Mutex
	list []control.Backend
}

func (t *table) List() []control.Backend {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.list)
}

func (t *table) Add(b ring.Backend) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.list {
		if o.ID == b.ID || o.Addr == b.Addr {
			return fmt.Errorf("%w: %s", ring.ErrDuplicate, b.ID)
		}
	}
	t.list = append(t.list, control.Backend{ID: b.ID, Addr: b.Addr, Weight: b.Weight, State: control.Down})
	return nil
}

func (t *table) with(id string, f func(*control.Backend)) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.list {
		if t.list[i].ID == id {
			f(&t.list[i])
			return true
		}
	}
	return false
}

func (t *table) Drain(id string) bool {
	return t.with(id, func(b *control.Backend) { b.State = control.Draining })
}
func (t *table) Enable(id string) bool {
	return t.with(id, func(b *control.Backend) { b.State = control.Up })
}
func (t *table) SetWeight(id string, w int) bool {
	return t.with(id, func(b *control.Backend) { b.Weight = w })
}

func (t *table) Remove(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.list)
	t.list = slices.DeleteFunc(t.list, func(b control.Backend) bool { return b.ID == id })
	return len(t.list) < n
}

func newTable() *table {
	return &table{list: []control.Backend{
		{Pool: "default", ID: "a", Addr: "127.0.0.1:8001", Weight: 1, State: control.Up},
		{Pool: "default", ID: "b", Addr: "127.0.0.1:8002", Weight: 2, State: control.Down},
	}}
}

// do sends one request to h and returns the status and body.
func do(t *testing.T, h http.Handler, method, path, token, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, "http://127.0.0.1:9090"+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestAPI(t *testing.T) {
	tab := newTable()
	h := New(Config{Backends: tab, Log: zerolog.Nop()})
	cases := []struct {
		method, path, body string
		status             int
		want               string // in the body
	}{
		{"GET", "/healthz", "", 200, "ok"},
		{"GET", "/readyz", "", 200, "ok"},
		{"GET", "/backends", "", 200, `"addr": "127.0.0.1:8002"`},
		{"POST", "/backends", `{"addr": "http://LOCALHOST:8003", "id": "c", "weight": 3}`, 201, `"addr": "localhost:8003"`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8004"}`, 201, `"id": "`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8001"}`, 409, `duplicate backend`},
		{"POST", "/backends", `{"addr": "127.0.0.1:99999"}`, 400, `bad port \"99999\": want 1-65535`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8005", "weight": 5000}`, 400, `bad weight \"5000\": want 1-1000`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8005", "id": "a b"}`, 400, `bad id \"a b\": want 1-64 letters`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8005 id=x"}`, 400, `bad port \"8005 id=x\"`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8005\u000bproxy=v2"}`, 400, `bad port \"8005\\vproxy=v2\"`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8005", "id": "x\u000bmaxconn=1"}`, 400, `bad id \"x\\vmaxconn=1\"`},
		{"POST", "/backends", `{"addr": ""}`, 400, `\"addr\": want host:port`},
		{"POST", "/backends", `{"addr": "127.0.0.1:8005", "port": 1}`, 400, `unknown field \"port\"`},
		{"POST", "/backends", `{"addr": `, 400, `bad JSON body`},
		{"POST", "/backends/a/drain", "", 200, `"state": "draining"`},
		{"POST", "/backends/zz/drain", "", 404, `no backend has id \"zz\": GET /backends lists them`},
		{"POST", "/backends/a/enable", "", 200, `"state": "up"`},
		{"PATCH", "/backends/b", `{"weight": 7}`, 200, `"weight": 7`},
		{"PATCH", "/backends/b", `{"weight": 0}`, 400, `\"weight\": want 1-1000`},
		{"PATCH", "/backends/b", `{}`, 400, `\"weight\": want 1-1000`},
		{"PATCH", "/backends/b", `{"weight": "7"}`, 400, `bad JSON body`},
		{"PATCH", "/backends/zz", `{"weight": 2}`, 404, `no backend has id`},
		{"DELETE", "/backends/b", "", 200, `"id": "b"`},
		{"DELETE", "/backends/b", "", 404, `no backend has id \"b\"`},
		{"GET", "/stats", "", 200, `"backends_total": 3`},
		{"PUT", "/backends", "", 405, ``},
		{"GET", "/metrics", "", 404, ``}, // no Metrics handler given
	}
	for _, c := range cases {
		status, body := do(t, h, c.method, c.path, "", c.body)
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s %s %s = %d %s; want %d with %s", c.method, c.path, c.body, status, body, c.status, c.want)
		}
		if status >= 400 && status != 405 && status != 404 || strings.Contains(c.want, "no backend") {
			var e apiError
			if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("%s %s: error body %q is not {\"error\": ...}", c.method, c.path, body)
			}
		}
	}
	// What the refused calls asked must not have happened.
	got := tab.List()
	ids := []string{}
	for _, b := range got {
		ids = append(ids, fmt.Sprintf("%s:%d:%s", b.ID, b.Weight, b.State))
	}
	if len(got) != 3 || got[0].ID != "a" || got[0].State != control.Up || got[1].ID != "c" || got[1].Weight != 3 {
		t.Errorf("backends after the calls = %v; want a (up), c (weight 3) and the one added without id, nothing else changed", ids)
	}
}

func TestReadyNeedsAcceptingAndABackendUp(t *testing.T) {
	tab := newTable()
	accepting := true
	h := New(Config{Backends: tab, Accepting: func() bool { return accepting }})
	if status, _ := do(t, h, "GET", "/readyz", "", ""); status != 200 {
		t.Errorf("readyz with a backend up = %d, want 200", status)
	}
	tab.Drain("a")
	if status, body := do(t, h, "GET", "/readyz", "", ""); status != 503 || !strings.Contains(body, "no backend is up") {
		t.Errorf("readyz with none up = %d %q, want 503 saying no backend is up", status, body)
	}
	tab.Enable("a")
	accepting = false
	if status, body := do(t, h, "GET", "/readyz", "", ""); status != 503 || !strings.Contains(body, "does not accept") {
		t.Errorf("readyz while not accepting = %d %q, want 503", status, body)
	}
}

func TestTokenGuardsAllButProbesAndPage(t *testing.T) {
	tab := newTable()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "lb_up 1\n") })
	upgrades := 0
	h := New(Config{Backends: tab, Token: "s3cret", Metrics: metrics, Upgrade: func() error { upgrades++; return nil }})
	open := []string{"GET /healthz", "GET /readyz", "GET /"}
	guarded := []string{"GET /backends", "POST /backends", "POST /backends/a/drain", "POST /backends/a/enable",
		"PATCH /backends/a", "DELETE /backends/a", "GET /stats", "GET /metrics", "POST /upgrade"}
	for _, r := range open {
		method, path, _ := strings.Cut(r, " ")
		if status, _ := do(t, h, method, path, "", ""); status != 200 {
			t.Errorf("%s without a token = %d, want 200", r, status)
		}
	}
	for _, r := range guarded {
		method, path, _ := strings.Cut(r, " ")
		for _, tok := range []string{"", "s3cre", "s3cret2", "S3CRET"} {
			status, body := do(t, h, method, path, tok, `{"weight": 2}`)
			if status != 401 || !strings.Contains(body, "Authorization: Bearer") {
				t.Errorf("%s with token %q = %d %s; want 401 saying how to send the token", r, tok, status, body)
			}
		}
	}
	if tab.List()[0].State != control.Up || len(tab.List()) != 2 || upgrades != 0 {
		t.Fatalf("refused calls changed the backends (%+v) or upgraded (%d)", tab.List(), upgrades)
	}
	if status, body := do(t, h, "GET", "/metrics", "s3cret", ""); status != 200 || body != "lb_up 1\n" {
		t.Errorf("GET /metrics with the token = %d %q, want the metrics handler's answer", status, body)
	}
	if status, _ := do(t, h, "POST", "/backends/a/drain", "s3cret", ""); status != 200 || tab.List()[0].State != control.Draining {
		t.Errorf("drain with the token = %d, state %s; want 200 and draining", status, tab.List()[0].State)
	}
}

// TestUpgrade: POST /upgrade answers once the upgrade is done, or with why it failed (500);
// an lb without upgrades in place has no such path.
func TestUpgrade(t *testing.T) {
	var failure error
	h := New(Config{Backends: newTable(), Upgrade: func() error { return failure }})
	if status, body := do(t, h, "POST", "/upgrade", "", ""); status != 200 || !strings.Contains(body, `"upgraded": true`) {
		t.Errorf("POST /upgrade = %d %s, want 200 upgraded", status, body)
	}
	failure = errors.New("child exited: exit status 2")
	if status, body := do(t, h, "POST", "/upgrade", "", ""); status != 500 || !strings.Contains(body, "child exited") {
		t.Errorf("a failed upgrade: %d %s, want 500 saying why", status, body)
	}
	if status, _ := do(t, New(Config{Backends: newTable()}), "POST", "/upgrade", "", ""); status != 404 && status != 405 {
		t.Errorf("POST /upgrade without Upgrade = %d, want 404 or 405", status)
	}
}

func TestPageIsSelfContained(t *testing.T) {
	h := New(Config{Backends: newTable()})
	req := httptest.NewRequest("GET", "http://localhost/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s, want the HTML page", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, external := range []string{"http://", "https://", "//cdn", "<link", "src="} {
		if strings.Contains(body, external) {
			t.Errorf("the page refers to %q: it must work offline, with everything inline", external)
		}
	}
	for _, uses := range []string{`"/backends"`, `"/stats"`, "Authorization", "drain", "enable"} {
		if !strings.Contains(body, uses) {
			t.Errorf("the page's script does not use %s", uses)
		}
	}
	if status, _ := do(t, h, "GET", "/nothing", "", ""); status != 404 {
		t.Errorf("GET /nothing = %d, want 404 (only / is the page)", status)
	}
}

// FuzzBodies sends any body to the calls that read one: lb never answers 5xx, a refusal is
// a JSON error and changes nothing, and an accepted add is in the list.
func FuzzBodies(f *testing.F) {
	for _, s := range []string{`{"addr": "127.0.0.1:9000", "id": "z", "weight": 3}`, `{"weight": 2}`, `{"addr": 1}`, `{}`, `{"addr": "x:1"} {}`, `[]`, `{"weight": 1e9}`} {
		f.Add("POST", s)
		f.Add("PATCH", s)
	}
	f.Fuzz(func(t *testing.T, method, body string) {
		path := "/backends"
		if method != "POST" {
			method, path = "PATCH", "/backends/a"
		}
		tab := newTable()
		h := New(Config{Backends: tab})
		before := fmt.Sprint(tab.List())
		status, out := do(t, h, method, path, "", body)
		switch {
		case status >= 500:
			t.Fatalf("%s %s %q = %d %s", method, path, body, status, out)
		case status >= 400:
			var e apiError
			if json.Unmarshal([]byte(out), &e) != nil || e.Error == "" {
				t.Fatalf("%s %q = %d with %q: not a JSON error", method, body, status, out)
			}
			if after := fmt.Sprint(tab.List()); after != before {
				t.Fatalf("%s %q refused (%d) but changed %s to %s", method, body, status, before, after)
			}
		case method == "POST":
			var b control.Backend
			if json.Unmarshal([]byte(out), &b) != nil || len(tab.List()) != 3 || tab.List()[2].ID != b.ID {
				t.Fatalf("POST %q = %d %s, list %v: the added backend is not listed", body, status, out, tab.List())
			}
		}
	})
}
