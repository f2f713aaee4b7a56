package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lb/httpsniff"
	"lb/ring"
	"lb/route"
	"lb/serversfile"
)

// flagDefaults are the values of lb serve's flags, as cmd/lb passes them.
var flagDefaults = Pool{
	Balance:           "roundrobin",
	Health:            Health{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3},
	StickyCookieAttrs: "Path=/; HttpOnly; SameSite=Lax",
	ConnectTimeout:    2 * time.Second,
	IdleTimeout:       5 * time.Minute,
}

func TestLoadExample(t *testing.T) {
	cfg, err := Load("../testdata/routing/lb.yaml", flagDefaults)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 2 || len(cfg.Pools) != 4 {
		t.Fatalf("%d listeners, %d pools", len(cfg.Listeners), len(cfg.Pools))
	}
	if cfg.Engine != "" {
		t.Errorf("Engine = %q from a file without engine:, want \"\" (--engine decides)", cfg.Engine)
	}
	web, api := cfg.Pool("web"), cfg.Pool("api")
	if web == nil || api == nil || cfg.Pool("nope") != nil {
		t.Fatal("Pool by name")
	}
	if web.Balance != "leastconn" || web.StickyCookie != "lb_web" || web.Backends[0].Weight != 2 || web.Backends[1].ID != "web-2" {
		t.Errorf("web = %+v", web)
	}
	if web.Health != flagDefaults.Health || web.IdleTimeout != 5*time.Minute || web.StickyCookieAttrs != flagDefaults.StickyCookieAttrs {
		t.Errorf("web does not default to the flags: %+v", web)
	}
	if len(api.Backends) != 2 || api.Backends[1].Addr != "127.0.0.1:9102" || api.StickyCookie != "lb_api" {
		t.Errorf("api (servers_file) = %+v", api)
	}
	if api.Health.Interval != time.Second || api.Health.HTTPPath != "/healthz" || api.Health.Timeout != time.Second || api.Balance != "roundrobin" {
		t.Errorf("api health = %+v", api.Health)
	}

	// The tables route as the file says.
	httpL, tlsL := cfg.Listeners[1], cfg.Listeners[0]
	for head, want := range map[string]string{
		"GET /api/x HTTP/1.1\r\nHost: a.test\r\n\r\n":   "api",
		"GET /api HTTP/1.1\r\nHost: a.test\r\n\r\n":     "web",
		"GET / HTTP/1.1\r\nHost: WWW.a.test:80\r\n\r\n": "web",
		"GET / HTTP/1.1\r\nHost: c.test\r\n\r\n":        "web",
	} {
		h, err := httpsniff.Parse([]byte(head))
		if err != nil {
			t.Fatal(err)
		}
		_, pool := httpL.Table.Match(&route.Conn{Protocol: route.ProtocolHTTP, Head: &h})
		if pool < 0 || cfg.Pools[pool].Name != want {
			t.Errorf("%q: pool %d, want %s", head, pool, want)
		}
	}
	if _, pool := tlsL.Table.Match(&route.Conn{Protocol: route.ProtocolTLS}); pool != -1 {
		t.Errorf("TLS without SNI: pool %d, want none", pool)
	}
	if tlsL.NoMatchStatus != 503 || tlsL.Routes[1].PoolName != "tls-b" || tlsL.Routes[1].Line != 7 {
		t.Errorf("listener = %+v", tlsL)
	}
}

func TestFromFlags(t *testing.T) {
	backends := []ring.Backend{{Addr: "127.0.0.1:1", ID: "a", Weight: 1}}
	disc := []serversfile.Discover{{Line: 2, Mode: "a", Name: "app.test", Port: 80, Weight: 1}}
	cfg := FromFlags(":7777", "servers.txt", &serversfile.File{Backends: backends, Discover: disc}, flagDefaults)
	if len(cfg.Listeners) != 1 || len(cfg.Pools) != 1 || cfg.Pools[0].Name != "default" || cfg.Pools[0].Health != flagDefaults.Health {
		t.Fatalf("%+v", cfg)
	}
	if _, pool := cfg.Listeners[0].Table.Match(&route.Conn{Protocol: route.ProtocolOther}); pool != 0 {
		t.Fatalf("catch-all: pool %d", pool)
	}
	backends[0].Addr = "changed"
	if cfg.Pools[0].Backends[0].Addr != "127.0.0.1:1" {
		t.Fatal("FromFlags keeps the caller's slice")
	}
	if p := cfg.Pools[0]; len(p.Discover) != 1 || p.Discover[0] != disc[0] || p.ServersFrom != "servers.txt" {
		t.Fatalf("discover lines: %+v from %q", p.Discover, p.ServersFrom)
	}
}

const minimal = `listeners:
  - listen: 127.0.0.1:8080
    routes:
      - pool: web
pools:
  web: {servers: [127.0.0.1:9001]}
`

// TestErrors checks that each mistake is reported at its line and column, saying what is
// allowed.
func TestErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       string // the whole message after "lb.yaml:"
	}{
		{"empty", "", "empty config: want listeners: and pools:"},
		{"syntax", "listeners: [\n", "1: bad YAML: did not find expected node content"},
		{"top-level key", minimal + "pool: {}\n", `7:1: unknown key "pool" in the config: want listeners, pools or engine`},
		{"no pools", "listeners: []\n", "1:1: no pools: add pools: with at least one named pool of servers:"},
		{"unknown match key", strings.Replace(minimal, "- pool: web", "- match: {hots: a.test}\n        pool: web", 1), `4:17: unknown key "hots" in match: want sni, alpn, host, path_prefix, h2c, protocol or source`},
		{"route key", strings.Replace(minimal, "- pool: web", "- pool: web\n        weight: 2", 1), `5:9: unknown key "weight" in a route: want match or pool`},
		{"unknown pool", strings.Replace(minimal, "- pool: web", "- pool: wbe", 1), `4:15: unknown pool "wbe": want one of the pools: web`},
		{"bad sni", strings.Replace(minimal, "- pool: web", "- match: {sni: \"a.*.test\"}\n        pool: web", 1), `4:22: bad sni "a.*.test": want a host name such as a.example.com, or *.example.com for every name under example.com`},
		{"bad host in list", strings.Replace(minimal, "- pool: web", "- match: {host: [a.test, \"b test\"]}\n        pool: web", 1), `4:32: bad host "b test": want a host name such as a.example.com, or *.example.com for every name under example.com`},
		{"bad protocol", strings.Replace(minimal, "- pool: web", "- match: {protocol: udp}\n        pool: web", 1), `4:27: bad protocol "udp": want http, tls or other`},
		{"bad source", strings.Replace(minimal, "- pool: web", "- match: {source: 10.0.0.0/33}\n        pool: web", 1), `4:25: bad source "10.0.0.0/33": want a client address or CIDR, e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32`},
		{"bad path", strings.Replace(minimal, "- pool: web", "- match: {path_prefix: api}\n        pool: web", 1), `4:30: bad path_prefix "api": want the start of a path, beginning with /, e.g. /api/`},
		{"sni and host", strings.Replace(minimal, "- pool: web", "- match: {sni: a.test, host: a.test}\n        pool: web", 1), `4:16: this match never holds: sni is read from TLS, host from HTTP/1: put them in separate routes`},
		{"sni and protocol http", strings.Replace(minimal, "- pool: web", "- match: {sni: a.test, protocol: http}\n        pool: web", 1), `4:16: this match never holds: sni is read from TLS, and protocol is http`},
		{"hidden route", strings.Replace(minimal, "- pool: web", "- pool: web\n      - match: {host: a.test}\n        pool: web", 1), `5:9: this route is never reached: the route on line 4 before it has no match and takes every connection; move that one last`},
		{"name twice", strings.Replace(strings.Replace(minimal, "  - listen: 127.0.0.1:8080", "  - listen: 127.0.0.1:8080\n    name: web", 1), "pools:", "  - listen: 127.0.0.1:8081\n    name: web\n    routes: [{pool: web}]\npools:", 1), `6:13: the listener name web is given twice (first on line 2): give each listener its own`},
		{"listen twice", strings.Replace(minimal, "pools:", "  - listen: 127.0.0.1:8080\n    routes: [{pool: web}]\npools:", 1), `5:13: 127.0.0.1:8080 is listened on twice (first on line 2): give each listener its own address, and put all its routes under it`},
		{"bad listen", strings.Replace(minimal, "127.0.0.1:8080", "127.0.0.1", 1), `2:13: bad listen address "127.0.0.1": want host:port with a port from 0 to 65535, e.g. 127.0.0.1:8443, [::1]:8443 or :8443`},
		{"no routes", strings.Replace(minimal, "    routes:\n      - pool: web\n", "", 1), `2:5: listener 127.0.0.1:8080 without routes: add routes:, e.g. - pool: NAME`},
		{"bad status", strings.Replace(minimal, "    routes:", "    status: 200\n    routes:", 1), `3:13: bad status "200": want an HTTP error status from 400 to 599 for HTTP clients no route takes (default 503)`},
		{"server port", strings.Replace(minimal, "127.0.0.1:9001", "127.0.0.1:9001, 127.0.0.1:99999", 1), `6:35: pool web: bad port "99999": want 1-65535`},
		{"server duplicate", strings.Replace(minimal, "web: {servers: [127.0.0.1:9001]}", "web:\n    servers:\n      - 127.0.0.1:9001\n      - 127.0.0.1:9001", 1), `9:9: pool web: duplicate backend 127.0.0.1:9001 (first on line 8)`},
		{"server option", strings.Replace(minimal, "127.0.0.1:9001", "127.0.0.1:9001 weigth=2", 1), `6:19: pool web: unknown option "weigth=2": want weight=N, id=NAME, proxy=v1|v2, check=tcp|http:/PATH or maxconn=N, one backend per line`},
		{"servers and file", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], servers_file: x.txt", 1), `6:50: pool web has both servers and servers_file: keep one`},
		{"no servers", strings.Replace(minimal, "{servers: [127.0.0.1:9001]}", "{balance: p2c}", 1), `6:3: pool web has no servers: add servers: [host:port, ...] or servers_file: FILE`},
		{"balance", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], balance: fastest", 1), `6:45: bad balance "fastest": want roundrobin, leastconn, p2c, source or random`},
		{"send_proxy", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], send_proxy: v3", 1), `6:48: bad send_proxy "v3": want v1, v2 or off`},
		{"cookie", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], sticky_cookie: \"a b\"", 1), `6:51: bad sticky_cookie "a b": want a cookie name: letters, digits and !#$%&'*+-.^_` + "`|~" + ` (or "" for none)`},
		{"timeout", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], connect_timeout: 0s", 1), `6:53: bad connect_timeout "0s": want a duration above 0, e.g. 2s`},
		{"health key", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], health: {path: /h}", 1), `6:45: unknown key "path" in health: want interval, timeout, rise, fall or http`},
		{"health rise", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], health: {rise: 0}", 1), `6:51: bad health rise "0": want a count from 1 to 1000`},
		{"pool key", strings.Replace(minimal, "[127.0.0.1:9001]", "[127.0.0.1:9001], sticky: x", 1), `6:36: unknown key "sticky" in pool web: want servers, servers_file, balance, health, sticky_cookie, sticky_cookie_attrs, session_cookie, send_proxy, connect_timeout or idle_timeout`},
		{"pool twice", minimal + "  web: {servers: [127.0.0.1:9002]}\n", `7:3: pool "web" defined twice (first on line 6): give each pool its own name`},
		{"key twice", strings.Replace(minimal, "- pool: web", "- pool: web\n        pool: web", 1), `5:9: pool given twice in a route (first on line 4): keep one`},
		{"servers_file missing", strings.Replace(minimal, "{servers: [127.0.0.1:9001]}", "{servers_file: none.txt}", 1), "6:23: pool web: servers_file: servers file: open DIR/none.txt: no such file or directory: the path is relative to the config file's directory"},
		{"routes not a list", strings.Replace(minimal, "    routes:\n      - pool: web\n", "    routes: {pool: web}\n", 1), "3:13: routes must be a list (lines starting with -, or [a, b])"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("lb.yaml", []byte(c.yaml), dir, flagDefaults)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			want := "lb.yaml:" + strings.ReplaceAll(c.want, "DIR", dir)
			if c.name == "empty" {
				want = "lb.yaml: " + c.want
			}
			if err.Error() != want {
				t.Fatalf("\n got %s\nwant %s", err, want)
			}
		})
	}
}

// TestServersFileErrors keeps the servers file's own line in its errors.
func TestServersFileErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api.txt"), []byte("127.0.0.1:1\nbad:port:x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("lb.yaml", []byte(strings.Replace(minimal, "{servers: [127.0.0.1:9001]}", "{servers_file: api.txt}", 1)), dir, flagDefaults)
	var le *serversfile.LineError
	if !errors.As(err, &le) || le.Line != 2 || !strings.HasPrefix(err.Error(), "lb.yaml:6:23: pool web: servers_file: "+filepath.Join(dir, "api.txt")+":2: ") {
		t.Fatalf("err = %v", err)
	}
}

func TestMatchValues(t *testing.T) {
	y := strings.Replace(minimal, "- pool: web", `- match:
          sni: ["*.A.test", b.test]
          alpn: [h2, http/1.1]
          source: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32"]
          h2c: false
          protocol: tls
        pool: web
      - match: {h2c: true}
        pool: web
      - match: {}
        pool: web`, 1)
	cfg, err := Parse("lb.yaml", []byte(y), t.TempDir(), flagDefaults)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Listeners[0].Routes[0].Match
	if len(m.SNI) != 2 || m.SNI[0].String() != "*.a.test" || len(m.ALPN) != 2 || m.H2C != route.H2CNo || m.Protocol != route.ProtocolTLS {
		t.Fatalf("match = %+v", m)
	}
	if len(m.Source) != 3 || m.Source[1] != netip.MustParsePrefix("192.0.2.7/32") {
		t.Fatalf("source = %v", m.Source)
	}
	if cfg.Listeners[0].Routes[1].Match.H2C != route.H2CYes {
		t.Fatal("h2c: true")
	}
}
