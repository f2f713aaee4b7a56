package route

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"testing"

	"lb/httpsniff"
	"lb/internal/tlstest"
)

func names(t testing.TB, ss ...string) []Name {
	t.Helper()
	var out []Name
	for _, s := range ss {
		n, err := ParseName(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// httpConn sniffs a real request head.
func httpConn(t testing.TB, head string, src string) *Conn {
	t.Helper()
	h, err := httpsniff.Parse([]byte(head))
	if err != nil {
		t.Fatalf("Parse(%q): %v", head, err)
	}
	c := &Conn{Protocol: ProtocolOf(h.Kind, false), Head: &h}
	if src != "" {
		c.Source = netip.MustParseAddr(src)
	}
	return c
}

// tlsConn sniffs the ClientHello of a real crypto/tls client.
func tlsConn(t testing.TB, sni string, alpn ...string) *Conn {
	t.Helper()
	rec := tlstest.ClientHello(t, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: sni == ""})
	h, err := httpsniff.Parse(rec)
	if err != nil || h.Kind != httpsniff.KindTLS {
		t.Fatalf("sniff: %v %v", h.Kind, err)
	}
	hello, err := httpsniff.ParseClientHello(rec)
	if err != nil {
		t.Fatal(err)
	}
	return &Conn{Protocol: ProtocolOf(h.Kind, false), Hello: &hello, Source: netip.MustParseAddr("10.1.2.3")}
}

func TestMatch(t *testing.T) {
	routes := []Route{
		{Match: Match{SNI: names(t, "a.test")}, Pool: 0},
		{Match: Match{SNI: names(t, "*.b.test")}, Pool: 1},
		{Match: Match{Protocol: ProtocolTLS, ALPN: []string{"h2"}}, Pool: 2},
		{Match: Match{Protocol: ProtocolTLS}, Pool: 3},
		{Match: Match{Host: names(t, "a.test"), PathPrefix: []string{"/api"}}, Pool: 4},
		{Match: Match{Host: names(t, "a.test", "www.a.test")}, Pool: 5},
		{Match: Match{H2C: H2CYes}, Pool: 6},
		{Match: Match{Source: []netip.Prefix{netip.MustParsePrefix("192.168.7.9/24"), netip.MustParsePrefix("fd00::/8")}, Protocol: ProtocolHTTP}, Pool: 7},
		{Match: Match{Protocol: ProtocolOther}, Pool: 8},
	}
	tab, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	if n := tab.Needs(); !n.Hello || !n.Head || !n.Kind {
		t.Fatalf("Needs = %+v, want all", n)
	}
	h2c := &Conn{Protocol: ProtocolHTTP, H2C: true}
	cases := []struct {
		name string
		c    *Conn
		want int // pool, -1 none
	}{
		{"sni exact", tlsConn(t, "a.test"), 0},
		{"sni case-insensitive", tlsConn(t, "A.Test"), 0},
		{"sni wildcard", tlsConn(t, "x.b.test"), 1},
		{"sni wildcard deeper", tlsConn(t, "x.y.B.test"), 1},
		{"sni wildcard not the apex", tlsConn(t, "b.test"), 3},
		{"sni wildcard not a suffix of a label", tlsConn(t, "xb.test"), 3},
		{"alpn h2", tlsConn(t, "c.test", "http/1.1", "h2"), 2},
		{"alpn http/1.1", tlsConn(t, "c.test", "http/1.1"), 3},
		{"no sni", tlsConn(t, ""), 3},
		{"host and path", httpConn(t, "GET /api/v1?x=1 HTTP/1.1\r\nHost: a.test\r\n\r\n", ""), 4},
		{"host with port and path", httpConn(t, "GET /api HTTP/1.1\r\nHost: A.TEST:8080\r\n\r\n", ""), 4},
		{"absolute-form path", httpConn(t, "GET http://a.test:80/api/x HTTP/1.1\r\nHost: a.test\r\n\r\n", ""), 4},
		{"path prefix is bytes", httpConn(t, "GET /Api HTTP/1.1\r\nHost: a.test\r\n\r\n", ""), 5},
		{"path in query only", httpConn(t, "GET /x?/api HTTP/1.1\r\nHost: a.test\r\n\r\n", ""), 5},
		{"host trailing dot", httpConn(t, "GET / HTTP/1.1\r\nHost: www.a.test.\r\n\r\n", ""), 5},
		{"h2c", h2c, 6},
		{"source v4", httpConn(t, "GET / HTTP/1.1\r\nHost: other\r\n\r\n", "192.168.7.200"), 7},
		{"source v4-mapped", httpConn(t, "GET / HTTP/1.1\r\nHost: other\r\n\r\n", "::ffff:192.168.7.1"), 7},
		{"source v6", httpConn(t, "GET / HTTP/1.1\r\n\r\n", "fd12::1"), 7},
		{"source outside", httpConn(t, "GET / HTTP/1.1\r\nHost: other\r\n\r\n", "192.168.8.1"), -1},
		{"no source", httpConn(t, "GET / HTTP/1.1\r\nHost: other\r\n\r\n", ""), -1},
		{"other", &Conn{Protocol: ProtocolOther}, 8},
		{"host only in tls", &Conn{Protocol: ProtocolHTTP}, -1},
	}
	for _, c := range cases {
		i, pool := tab.Match(c.c)
		if pool != c.want || (pool >= 0) != (i >= 0) || i >= 0 && routes[i].Pool != pool {
			t.Errorf("%s: Match = route %d pool %d, want pool %d", c.name, i, pool, c.want)
		}
	}
}

func TestMatchEveryKeyMustHold(t *testing.T) {
	tab, _ := New([]Route{{Match: Match{Host: names(t, "a.test"), PathPrefix: []string{"/api/", "/v2/"}, Protocol: ProtocolHTTP, H2C: H2CNo}, Pool: 9}})
	if _, p := tab.Match(httpConn(t, "GET /v2/x HTTP/1.1\r\nHost: a.test\r\n\r\n", "")); p != 9 {
		t.Fatalf("all hold: pool %d", p)
	}
	if _, p := tab.Match(httpConn(t, "GET /v3/x HTTP/1.1\r\nHost: a.test\r\n\r\n", "")); p != -1 {
		t.Fatalf("path fails: pool %d", p)
	}
	if _, p := tab.Match(httpConn(t, "GET /v2/x HTTP/1.1\r\nHost: b.test\r\n\r\n", "")); p != -1 {
		t.Fatalf("host fails: pool %d", p)
	}
	catchAll, _ := New([]Route{{Pool: 3}})
	if _, p := catchAll.Match(&Conn{}); p != 3 {
		t.Fatalf("catch-all: pool %d", p)
	}
	if n := catchAll.Needs(); n != (Needs{}) {
		t.Fatalf("catch-all needs %+v", n)
	}
}

func TestParseName(t *testing.T) {
	good := map[string]string{"A.Test": "a.test", "*.Example.com": "*.example.com", "a.test.": "a.test", "127.0.0.1": "127.0.0.1", "[::1]": "[::1]", "::1": "[::1]", "x_y.test": "x_y.test"}
	for in, want := range good {
		n, err := ParseName(in)
		if err != nil || n.String() != want {
			t.Errorf("ParseName(%q) = %q, %v; want %q", in, n, err, want)
		}
	}
	for _, bad := range []string{"", "*", "*.", "a..b", "a.*.b", "-a.test", "a b", "a.test:80", "*.127.0.0.1x!", "é.test"} {
		if _, err := ParseName(bad); err == nil {
			t.Errorf("ParseName(%q): no error", bad)
		}
	}
	if _, err := ParseProtocol("udp"); err == nil {
		t.Error("ParseProtocol(udp): no error")
	}
	if p, err := ParseProtocol("tls"); err != nil || p != ProtocolTLS || p.String() != "tls" {
		t.Errorf("ParseProtocol(tls) = %v, %v", p, err)
	}
	if _, err := New(nil); err != ErrEmpty {
		t.Errorf("New(nil) = %v", err)
	}
}

func TestHostPortStripping(t *testing.T) {
	for in, want := range map[string]string{"a.test:8080": "a.test", "a.test": "a.test", "[::1]:80": "[::1]", "[::1]": "[::1]", "a:b": "a:b", ":80": ""} {
		if got := string(stripPort([]byte(in))); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"/a?b": "/a", "/a#f": "/a", "http://h/x/y?q": "/x/y", "http://h": "/", "http://h?q": "/", "*": "", "h:443": ""} {
		if got := string(requestPath([]byte(in))); got != want {
			t.Errorf("requestPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMatchAllocs(t *testing.T) {
	tab := hostTable(t, 20)
	c := httpConn(t, "GET /x HTTP/1.1\r\nHost: Host19.Example.test:8080\r\n\r\n", "10.0.0.1")
	tc := tlsConn(t, "host19.example.test", "h2")
	if a := testing.AllocsPerRun(100, func() { tab.Match(c); tab.Match(tc) }); a != 0 {
		t.Fatalf("Match allocates %.1f times", a)
	}
}

// hostTable has n host routes host0..host<n-1>.example.test, then n SNI routes, then a
// catch-all.
func hostTable(t testing.TB, n int) *Table {
	var routes []Route
	for i := range n {
		routes = append(routes, Route{Match: Match{Host: names(t, fmt.Sprintf("host%d.example.test", i))}, Pool: i})
	}
	for i := range n {
		routes = append(routes, Route{Match: Match{SNI: names(t, fmt.Sprintf("host%d.example.test", i))}, Pool: n + i})
	}
	routes = append(routes, Route{Pool: 2 * n})
	tab, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// BenchmarkMatch compares a request for the last of 20 host routes (and a TLS connection
// for the last of 20 SNI routes, after the host routes) with one catch-all route.
func BenchmarkMatch(b *testing.B) {
	head := "GET /index.html HTTP/1.1\r\nHost: host19.example.test\r\nUser-Agent: bench\r\n\r\n"
	tab := hostTable(b, 20)
	catchAll, _ := New([]Route{{Pool: 0}})
	for _, bc := range []struct {
		name string
		tab  *Table
		c    *Conn
		want int
	}{
		{"catch-all", catchAll, httpConn(b, head, "10.0.0.1"), 0},
		{"host-20th", tab, httpConn(b, head, "10.0.0.1"), 19},
		{"sni-20th", tab, tlsConn(b, "host19.example.test", "h2"), 39},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, p := bc.tab.Match(bc.c); p != bc.want {
					b.Fatalf("pool %d", p)
				}
			}
		})
	}
}

// BenchmarkSniffAndRoute is the route stage's whole work per connection: parse what was
// peeked and match it, for an HTTP/1 head and a TLS ClientHello, against 20 host routes
// and 20 SNI routes.
func BenchmarkSniffAndRoute(b *testing.B) {
	tab := hostTable(b, 20)
	head := []byte("GET /index.html HTTP/1.1\r\nHost: host19.example.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	hello := tlstest.ClientHello(b, &tls.Config{ServerName: "host19.example.test", NextProtos: []string{"h2", "http/1.1"}, CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}})
	b.Run("http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h, err := httpsniff.Parse(head)
			c := Conn{Protocol: ProtocolOf(h.Kind, false), Head: &h}
			if _, p := tab.Match(&c); err != nil || p != 19 {
				b.Fatal(p, err)
			}
		}
	})
	b.Run("tls", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h, _ := httpsniff.Parse(hello)
			ch, err := httpsniff.ParseClientHello(hello)
			c := Conn{Protocol: ProtocolOf(h.Kind, false), Hello: &ch}
			if _, p := tab.Match(&c); err != nil || p != 39 {
				b.Fatal(p, err)
			}
		}
	})
}
