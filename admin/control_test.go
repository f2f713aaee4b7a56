package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"lb/control"
	"lb/health"
	"lb/ring"
)

// TestAdminOverControl drives the API through a real HTTP client against a real Control:
// what a call says is what the ring then does.
func TestAdminOverControl(t *testing.T) {
	a := listenN(t, 3)
	r, err := ring.New(ring.Backend{ID: "a", Addr: a[0], Weight: 1}, ring.Backend{ID: "b", Addr: a[1], Weight: 1})
	must(t, err)
	p := health.NewProber(r, health.Config{Timeout: time.Second, Rise: 3}, zerolog.Nop())
	p.Init(context.Background())
	c := control.New(control.Config{Ring: r, Prober: p})
	srv := httptest.NewServer(New(Config{Backends: c, Token: "t0k"}))
	defer srv.Close()
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer t0k")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
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
	var list []control.Backend
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

// listenN starts n loopback listeners that accept and close, as health probes need, and
// closes them when the test ends.
func listenN(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
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
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// states returns id=state:weight of every backend, in ring order.
func states(c *control.Control) string {
	var out []string
	for _, b := range c.List() {
		out = append(out, fmt.Sprintf("%s=%s:%d", b.ID, b.State, b.Weight))
	}
	return strings.Join(out, " ")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
