package config

import (
	"errors"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"lb/route"
)

// sections are the mappings of a config file by the name keyCases use, with the keys the
// parser allows in each: the lists parse.go hands to p.mapping.
var sections = map[string][]string{
	"config":   topKeys,
	"listener": listenerKeys,
	"route":    routeKeys,
	"match":    matchKeys,
	"pool":     poolKeys,
	"health":   healthKeys,
}

// bad is an invalid value of a key and the message its error must carry after FILE:LINE:COL.
type bad struct {
	value, want string
	colDelta    int // how far right of the value's first character the error points (an item of a list)
}

// keyCase is one key of the config file, written once with a valid value, which must land
// in the Config (got returns what landed, compared with want), and once per invalid value.
type keyCase struct {
	section, key string
	valid        string
	got          func(*Config) any
	want         any
	invalid      []bad
}

var keyCases = []keyCase{
	{"config", "listeners", `[{listen: "127.0.0.1:8081", routes: [{pool: web}]}]`,
		func(c *Config) any { return c.Listeners[0].Listen }, "127.0.0.1:8081",
		[]bad{{"x", "listeners must be a list (lines starting with -, or [a, b])", 0}}},
	{"config", "pools", `{api: {servers: [127.0.0.1:9002]}, web: {servers: [127.0.0.1:9001]}}`,
		func(c *Config) any { return c.Pools[0].Name + " " + c.Pools[0].Backends[0].Addr }, "api 127.0.0.1:9002",
		[]bad{{"x", "pools must be a mapping of pool names to pools, e.g. web: {servers: [127.0.0.1:9001]}", 0}}},
	{"config", "engine", "epoll",
		func(c *Config) any { return c.Engine }, "epoll",
		[]bad{{"bogus", `bad engine "bogus": want auto, epoll or uring`, 0},
			{"EPOLL", `bad engine "EPOLL": want auto, epoll or uring`, 0},
			{"[uring]", "engine must be a single value", 0}}},

	{"listener", "listen", "127.0.0.1:8081",
		func(c *Config) any { return c.Listeners[0].Listen }, "127.0.0.1:8081",
		[]bad{{"127.0.0.1", `bad listen address "127.0.0.1": want host:port with a port from 0 to 65535, e.g. 127.0.0.1:8443, [::1]:8443 or :8443`, 0},
			{"127.0.0.1:65536", `bad listen address "127.0.0.1:65536": want host:port with a port from 0 to 65535, e.g. 127.0.0.1:8443, [::1]:8443 or :8443`, 0}}},
	{"listener", "routes", "[{match: {host: a.test}, pool: web}, {pool: web}]",
		func(c *Config) any { return len(c.Listeners[0].Routes) }, 2,
		[]bad{{"x", "routes must be a list (lines starting with -, or [a, b])", 0},
			{"[]", "no routes: add at least one, e.g. - pool: NAME", 0}}},
	{"listener", "name", "web",
		func(c *Config) any { return c.Listeners[0].Name }, "web",
		[]bad{{"admin", `bad listener name "admin": want 1 to 255 letters, digits, '.', '_' or '-', not admin or metrics (the admin listeners' names), e.g. web`, 0},
			{"web:80", `bad listener name "web:80": want 1 to 255 letters, digits, '.', '_' or '-', not admin or metrics (the admin listeners' names), e.g. web`, 0}}},
	{"listener", "status", "404",
		func(c *Config) any { return c.Listeners[0].NoMatchStatus }, 404,
		[]bad{{"200", `bad status "200": want an HTTP error status from 400 to 599 for HTTP clients no route takes (default 503)`, 0},
			{"600", `bad status "600": want an HTTP error status from 400 to 599 for HTTP clients no route takes (default 503)`, 0}}},

	{"route", "match", "{host: a.test}",
		func(c *Config) any { return c.Listeners[0].Routes[0].Match.Host[0].String() }, "a.test",
		[]bad{{"x", "match must be a mapping of sni, alpn, host, path_prefix, h2c, protocol or source", 0}}},
	{"route", "pool", "web",
		func(c *Config) any { return c.Listeners[0].Routes[0].PoolName }, "web",
		[]bad{{"nope", `unknown pool "nope": want one of the pools: web`, 0},
			{"[web]", "pool must be a single value", 0}}},

	{"match", "sni", `["*.A.test", b.test]`,
		func(c *Config) any { return c.Listeners[0].Routes[0].Match.SNI[0].String() }, "*.a.test",
		[]bad{{`"a.*.test"`, `bad sni "a.*.test": want a host name such as a.example.com, or *.example.com for every name under example.com`, 0}}},
	{"match", "alpn", "[h2, http/1.1]",
		func(c *Config) any { return strings.Join(c.Listeners[0].Routes[0].Match.ALPN, ",") }, "h2,http/1.1",
		[]bad{{`"h 2"`, `bad alpn "h 2": want a protocol name such as h2 or http/1.1`, 0}}},
	{"match", "host", "a.test",
		func(c *Config) any { return c.Listeners[0].Routes[0].Match.Host[0].String() }, "a.test",
		[]bad{{`[a.test, "b test"]`, `bad host "b test": want a host name such as a.example.com, or *.example.com for every name under example.com`, 9},
			{"[]", "host is an empty list: give at least one value, or leave the key out", 0}}},
	{"match", "path_prefix", "/api/",
		func(c *Config) any { return c.Listeners[0].Routes[0].Match.PathPrefix[0] }, "/api/",
		[]bad{{"api", `bad path_prefix "api": want the start of a path, beginning with /, e.g. /api/`, 0}}},
	{"match", "h2c", "true",
		func(c *Config) any { return c.Listeners[0].Routes[0].Match.H2C }, route.H2CYes,
		[]bad{{"maybe", `bad h2c "maybe": want true (only the HTTP/2 prior-knowledge preface) or false`, 0}}},
	{"match", "protocol", "tls",
		func(c *Config) any { return c.Listeners[0].Routes[0].Match.Protocol }, route.ProtocolTLS,
		[]bad{{"udp", `bad protocol "udp": want http, tls or other`, 0}}},
	{"match", "source", "[10.0.0.0/8, 192.0.2.7]",
		func(c *Config) any { return c.Listeners[0].Routes[0].Match.Source[1].String() }, "192.0.2.7/32",
		[]bad{{"10.0.0.0/33", `bad source "10.0.0.0/33": want a client address or CIDR, e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32`, 0}}},

	{"pool", "servers", `["127.0.0.1:9001 weight=3 id=one"]`,
		func(c *Config) any { b := c.Pools[0].Backends[0]; return b.ID + " " + b.Addr }, "one 127.0.0.1:9001",
		[]bad{{"[127.0.0.1:99999]", `pool web: bad port "99999": want 1-65535`, 1},
			{"x", "servers must be a list (lines starting with -, or [a, b])", 0},
			{"[]", "pool web has no servers: add at least one, e.g. - 127.0.0.1:9001", 0}}},
	{"pool", "servers_file", "servers.txt",
		func(c *Config) any { return c.Pools[0].Backends[0].Addr }, "127.0.0.1:9009",
		[]bad{{`""`, `bad servers_file "": want the path of a servers file, relative to this file`, 0}}},
	{"pool", "balance", "p2c",
		func(c *Config) any { return c.Pools[0].Balance }, "p2c",
		[]bad{{"fastest", `bad balance "fastest": want roundrobin, leastconn, p2c, source or random`, 0}}},
	{"pool", "health", "{interval: 5s}",
		func(c *Config) any { return c.Pools[0].Health.Interval }, 5 * time.Second,
		[]bad{{"x", "health must be a mapping of interval, timeout, rise, fall or http", 0}}},
	{"pool", "sticky_cookie", "lb_s",
		func(c *Config) any { return c.Pools[0].StickyCookie }, "lb_s",
		[]bad{{`"a b"`, `bad sticky_cookie "a b": want a cookie name: letters, digits and !#$%&'*+-.^_` + "`|~" + ` (or "" for none)`, 0}}},
	{"pool", "sticky_cookie_attrs", `"Path=/app; Secure"`,
		func(c *Config) any { return c.Pools[0].StickyCookieAttrs }, "Path=/app; Secure",
		[]bad{{`"Path=/\nX"`, `bad sticky_cookie_attrs "Path=/\nX": want one line, e.g. Path=/; HttpOnly; SameSite=Lax`, 0}}},
	{"pool", "session_cookie", "PHPSESSID",
		func(c *Config) any { return c.Pools[0].SessionCookie }, "PHPSESSID",
		[]bad{{"a;b", `bad session_cookie "a;b": want a cookie name: letters, digits and !#$%&'*+-.^_` + "`|~" + ` (or "" for none)`, 0}}},
	{"pool", "send_proxy", "v2",
		func(c *Config) any { return c.Pools[0].SendProxy }, "v2",
		[]bad{{"v3", `bad send_proxy "v3": want v1, v2 or off`, 0}}},
	{"pool", "connect_timeout", "3s",
		func(c *Config) any { return c.Pools[0].ConnectTimeout }, 3 * time.Second,
		[]bad{{"0s", `bad connect_timeout "0s": want a duration above 0, e.g. 2s`, 0},
			{"0", `bad connect_timeout "0": want a duration above 0, e.g. 2s`, 0},
			{"-1s", `bad connect_timeout "-1s": want a duration above 0, e.g. 2s`, 0},
			{"3", `bad connect_timeout "3": want a duration above 0, e.g. 2s`, 0}}},
	{"pool", "idle_timeout", "0s",
		func(c *Config) any { return c.Pools[0].IdleTimeout }, time.Duration(0),
		[]bad{{"-1s", `bad idle_timeout "-1s": want 0 (never) or a duration, e.g. 5m`, 0},
			{"forever", `bad idle_timeout "forever": want 0 (never) or a duration, e.g. 5m`, 0}}},

	{"health", "interval", "500ms",
		func(c *Config) any { return c.Pools[0].Health.Interval }, 500 * time.Millisecond,
		[]bad{{"0s", `bad health interval "0s": want a duration above 0, e.g. 2s`, 0},
			{"0", `bad health interval "0": want a duration above 0, e.g. 2s`, 0},
			{"-2s", `bad health interval "-2s": want a duration above 0, e.g. 2s`, 0}}},
	{"health", "timeout", "250ms",
		func(c *Config) any { return c.Pools[0].Health.Timeout }, 250 * time.Millisecond,
		[]bad{{"0s", `bad health timeout "0s": want a duration above 0, e.g. 2s`, 0},
			{"-1s", `bad health timeout "-1s": want a duration above 0, e.g. 2s`, 0}}},
	{"health", "rise", "5",
		func(c *Config) any { return c.Pools[0].Health.Rise }, 5,
		[]bad{{"0", `bad health rise "0": want a count from 1 to 1000`, 0},
			{"-1", `bad health rise "-1": want a count from 1 to 1000`, 0},
			{"1001", `bad health rise "1001": want a count from 1 to 1000`, 0}}},
	{"health", "fall", "4",
		func(c *Config) any { return c.Pools[0].Health.Fall }, 4,
		[]bad{{"0", `bad health fall "0": want a count from 1 to 1000`, 0},
			{"two", `bad health fall "two": want a count from 1 to 1000`, 0}}},
	{"health", "http", "/healthz",
		func(c *Config) any { return c.Pools[0].Health.HTTPPath }, "/healthz",
		[]bad{{"healthz", `bad health http "healthz": want a path to GET, beginning with /, e.g. /healthz`, 0}}},
}

// keyDoc writes a whole valid config in block style around one key of section, given
// value, and returns it with the line and column where value starts. The key takes the
// place of the base document's key of that name, if it has one.
func keyDoc(section, key, value string) (doc string, line, col int) {
	var lines []string
	tested := func(sec, indent string) {
		if sec == section {
			lines = append(lines, indent+key+": "+value)
			line, col = len(lines), len(indent)+len(key)+3
		}
	}
	// field writes k: v at indent unless k is the tested key; block, when set, writes the
	// nested mapping under it instead of v.
	field := func(sec, indent, k, v string, block func(indent string)) {
		if sec == section && k == key {
			return
		}
		if block == nil {
			lines = append(lines, indent+k+": "+v)
			return
		}
		lines = append(lines, indent+k+":")
		block(indent + "  ")
	}
	field("config", "", "listeners", "", func(in string) {
		lines = append(lines, in+"-") // the item's mapping on the lines below, so any key may come first
		in += "  "
		field("listener", in, "listen", "127.0.0.1:8080", nil)
		field("listener", in, "routes", "", func(in string) {
			lines = append(lines, in+"-")
			in += "  "
			field("route", in, "pool", "web", nil)
			if section == "match" {
				field("route", in, "match", "", func(in string) { tested("match", in) })
			}
			tested("route", in)
		})
		tested("listener", in)
	})
	field("config", "", "pools", "", func(in string) {
		lines = append(lines, in+"web:")
		in += "  "
		if !(section == "pool" && key == "servers_file") {
			field("pool", in, "servers", "[127.0.0.1:9001]", nil)
		}
		if section == "health" {
			field("pool", in, "health", "", func(in string) { tested("health", in) })
		}
		tested("pool", in)
	})
	tested("config", "")
	return strings.Join(lines, "\n") + "\n", line, col
}

// TestEveryKey loads every key the parser accepts with a valid value, which must land in
// the Config, and with invalid ones, which must be refused at the value's line and column
// with a message saying what is allowed.
func TestEveryKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "servers.txt"), []byte("127.0.0.1:9009\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range keyCases {
		t.Run(c.section+"/"+c.key, func(t *testing.T) {
			doc, _, _ := keyDoc(c.section, c.key, c.valid)
			cfg, err := Parse("lb.yaml", []byte(doc), dir, flagDefaults)
			if err != nil {
				t.Fatalf("valid %s: %s refused: %v\n%s", c.key, c.valid, err, doc)
			}
			if got := c.got(cfg); got != c.want {
				t.Errorf("%s: %s loaded %v, want %v\n%s", c.key, c.valid, got, c.want, doc)
			}
			if len(c.invalid) == 0 {
				t.Fatalf("%s has no invalid value", c.key)
			}
			for _, b := range c.invalid {
				doc, line, col := keyDoc(c.section, c.key, b.value)
				_, err := Parse("lb.yaml", []byte(doc), dir, flagDefaults)
				var ce *Error
				if !errors.As(err, &ce) {
					t.Errorf("%s: %s: err = %v (%T), want *Error\n%s", c.key, b.value, err, err, doc)
					continue
				}
				if ce.Line != line || ce.Col != col+b.colDelta || ce.Msg != b.want {
					t.Errorf("%s: %s:\n got %s\nwant lb.yaml:%d:%d: %s\n%s", c.key, b.value, err, line, col+b.colDelta, b.want, doc)
				}
			}
		})
	}
}

// TestEveryKeyIsInTheTable fails when the parser accepts a key keyCases does not load, or
// reads a mapping with a key list that sections does not know: add the new key to
// keyCases (and its section to sections) with a valid and an invalid value.
func TestEveryKeyIsInTheTable(t *testing.T) {
	for section, keys := range sections {
		for _, k := range keys {
			if !slices.ContainsFunc(keyCases, func(c keyCase) bool { return c.section == section && c.key == k }) {
				t.Errorf("key %s of %s is not in keyCases: add it with a valid and an invalid value", k, section)
			}
		}
	}
	for _, c := range keyCases {
		if !slices.Contains(sections[c.section], c.key) {
			t.Errorf("keyCases has %s of %s, which the parser does not accept", c.key, c.section)
		}
	}

	// Every p.mapping call in the package's code names one of the lists above.
	lists := map[string]bool{"topKeys": true, "listenerKeys": true, "routeKeys": true, "matchKeys": true, "poolKeys": true, "healthKeys": true}
	fset := token.NewFileSet()
	pkgs, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	for _, name := range pkgs {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := goparser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "mapping" {
				return true
			}
			calls++
			last := call.Args[len(call.Args)-1]
			if id, ok := last.(*ast.Ident); !ok || !lists[id.Name] || !call.Ellipsis.IsValid() {
				t.Errorf("%s: p.mapping's allowed keys are not one of the lists TestEveryKey covers (%v): name them in a ...Keys variable and add it to sections", fset.Position(call.Pos()), slices.Sorted(maps.Keys(lists)))
			}
			return true
		})
	}
	if calls != len(sections) {
		t.Errorf("%d p.mapping calls in the code, %d sections in the table: a mapping is read without its keys in keyCases", calls, len(sections))
	}
}
