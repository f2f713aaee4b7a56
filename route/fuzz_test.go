package route

import (
	"strings"
	"testing"

	"lb/httpsniff"
)

// FuzzParseName: an accepted name prints as itself, parses back to itself, and matches what
// it should: itself when exact, one more label in front when a wildcard, and in any case.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"a.test", "*.Example.com", "127.0.0.1", "[::1]", "a.test.", "*", "a..b", "x_y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseName(s)
		if err != nil {
			return
		}
		back, err := ParseName(n.String())
		if err != nil || back != n {
			t.Fatalf("ParseName(%q) = %q, which parses to %q, %v", s, n, back, err)
		}
		name := strings.TrimPrefix(n.String(), "*.")
		if n.wildcard {
			if n.matches([]byte(name)) || !n.matches([]byte("X."+strings.ToUpper(name))) {
				t.Fatalf("wildcard %q: apex or subdomain wrong", n)
			}
		} else if !n.matches([]byte(strings.ToUpper(name))) {
			t.Fatalf("%q does not match itself", n)
		}
	})
}

// FuzzMatch routes any request head: no panic, and a route found is a route that holds.
func FuzzMatch(f *testing.F) {
	f.Add("GET /api/x HTTP/1.1\r\nHost: a.test:80\r\n\r\n")
	f.Add("GET http://a.test HTTP/1.1\r\nHost: [::1]:8\r\n\r\n")
	f.Add("GET * HTTP/1.1\r\nHost: .\r\n\r\n")
	tab := hostTable(f, 3)
	paths, _ := New([]Route{{Match: Match{PathPrefix: []string{"/api"}}, Pool: 1}, {Match: Match{Host: names(f, "*.test")}, Pool: 2}})
	f.Fuzz(func(t *testing.T, head string) {
		h, err := httpsniff.Parse([]byte(head))
		if err != nil {
			return
		}
		c := &Conn{Protocol: ProtocolOf(h.Kind, false), Head: &h}
		tab.Match(c)
		_, pool := paths.Match(c)
		if pool == 1 && !strings.HasPrefix(string(requestPath(h.Target)), "/api") {
			t.Fatalf("path route for target %q", h.Target)
		}
		if pool == 2 && !strings.HasSuffix(strings.ToLower(strings.TrimSuffix(string(stripPort(h.Host)), ".")), ".test") {
			t.Fatalf("*.test route for host %q", h.Host)
		}
	})
}
