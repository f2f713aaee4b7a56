// Package route picks a connection's route from what its first bytes said: the TLS server
// name and ALPN protocols, the HTTP/1 Host header and path, the HTTP/2 prior-knowledge
// preface, the protocol, and the client's address. A Table is an ordered list of routes;
// the first whose every condition holds wins.
//
// A Table is immutable once built and safe for concurrent use; Match allocates nothing and
// takes no lock, so an event loop calls it inline. Building one (New, ParseName, ...) is
// for configuration time.
package route

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"lb/httpsniff"
)

// Protocol is what a connection speaks, as far as its first bytes tell.
type Protocol uint8

// Protocols a route can ask for. ProtocolAny, the zero value, asks for none.
const (
	ProtocolAny   Protocol = iota
	ProtocolHTTP           // an HTTP/1 request head (even one too large or malformed to parse), or the h2c preface
	ProtocolTLS            // a TLS handshake record
	ProtocolOther          // anything else, or nothing before the sniff deadline
)

var protocolNames = [...]string{"any", "http", "tls", "other"}

// String returns the name ParseProtocol reads.
func (p Protocol) String() string {
	if int(p) < len(protocolNames) {
		return protocolNames[p]
	}
	return fmt.Sprintf("Protocol(%d)", p)
}

// ParseProtocol reads "http", "tls" or "other".
func ParseProtocol(s string) (Protocol, error) {
	for i, n := range protocolNames[1:] {
		if s == n {
			return Protocol(i + 1), nil
		}
	}
	return ProtocolAny, fmt.Errorf("unknown protocol %q: want http, tls or other", s)
}

// ProtocolOf maps the sniffer's kind to a Protocol; startsHTTP is
// httpsniff.StartsLikeHTTP1 of the bytes, for heads that did not parse.
func ProtocolOf(k httpsniff.Kind, startsHTTP bool) Protocol {
	switch {
	case k == httpsniff.KindHTTP1, k == httpsniff.KindHTTP2, startsHTTP:
		return ProtocolHTTP
	case k == httpsniff.KindTLS:
		return ProtocolTLS
	}
	return ProtocolOther
}

// Name is a host name pattern: an exact name, or "*.example.com", which matches every name
// that ends in ".example.com" (a.example.com, a.b.example.com), but not example.com itself,
// as nginx's server_name does. Names compare without regard to ASCII case and a trailing dot.
type Name struct {
	s        string // lower-case; for a wildcard, the suffix with its leading dot
	wildcard bool
}

// ParseName reads a Name: a DNS name of labels of letters, digits, '-' and '_', optionally
// with "*." in front; or an IP address (a Host header may be one).
func ParseName(s string) (Name, error) {
	in := s
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	wildcard := false
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		s, wildcard = rest, true
	}
	if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil && !wildcard {
		if ip.Is6() {
			return Name{s: "[" + ip.String() + "]"}, nil
		}
		return Name{s: ip.String()}, nil
	}
	if !validName(s) {
		return Name{}, fmt.Errorf("bad name %q: want a host name such as a.example.com, or *.example.com for every name under example.com", in)
	}
	if wildcard {
		return Name{s: "." + s, wildcard: true}, nil
	}
	return Name{s: s}, nil
}

// String returns the name as ParseName reads it.
func (n Name) String() string {
	if n.wildcard {
		return "*" + n.s
	}
	return n.s
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// matches reports whether name, without a trailing dot, matches n, ignoring ASCII case.
func (n Name) matches(name []byte) bool {
	if !n.wildcard {
		return len(name) == len(n.s) && equalLower(name, n.s)
	}
	return len(name) > len(n.s) && equalLower(name[len(name)-len(n.s):], n.s)
}

// equalLower reports whether b, lower-cased, equals lower; they have the same length.
func equalLower(b []byte, lower string) bool {
	for i := range len(lower) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// Match is the conditions of one route. Every condition that is set must hold; within a
// condition that lists several values, any one will do. The zero Match matches everything.
type Match struct {
	SNI        []Name         // the TLS server name (the outer one with ECH)
	ALPN       []string       // a protocol the TLS client offers, e.g. h2, http/1.1
	Host       []Name         // the HTTP/1 Host header, without its port
	PathPrefix []string       // the start of the HTTP/1 request path (bytes, not decoded)
	H2C        H2C            // the HTTP/2 prior-knowledge preface, or its absence
	Protocol   Protocol       // http, tls or other
	Source     []netip.Prefix // the client's address (from the PROXY header when lb accepts one)
}

// H2C is a tri-state condition on the HTTP/2 prior-knowledge preface.
type H2C uint8

// Values of H2C.
const (
	H2CAny H2C = iota // the preface does not matter
	H2CYes            // only connections that start with it
	H2CNo             // only connections that do not
)

// Route is a Match and the index of the pool it sends to, in the caller's list of pools.
type Route struct {
	Match Match
	Pool  int
}

// Needs says which parts of the first bytes a table's routes look at, so that the caller
// can stop sniffing early when it has them, or not sniff at all when it needs none.
type Needs struct {
	Hello bool // some route matches on SNI or ALPN
	Head  bool // some route matches on Host or a path prefix
	Kind  bool // some route matches on the protocol or h2c
}

// Table is an ordered list of routes. Build it with New.
type Table struct {
	routes []Route
	needs  Needs
}

// ErrEmpty is returned by New for a table without routes.
var ErrEmpty = errors.New("route: no routes")

// New builds a Table from routes, in order: the first that matches wins. It copies routes.
func New(routes []Route) (*Table, error) {
	if len(routes) == 0 {
		return nil, ErrEmpty
	}
	t := &Table{routes: make([]Route, len(routes))}
	for i, r := range routes {
		m := r.Match
		m.SNI, m.ALPN, m.Host = clone(m.SNI), clone(m.ALPN), clone(m.Host)
		m.PathPrefix, m.Source = clone(m.PathPrefix), clone(m.Source)
		for j, p := range m.Source {
			m.Source[j] = p.Masked()
		}
		t.routes[i] = Route{Match: m, Pool: r.Pool}
		t.needs.Hello = t.needs.Hello || len(m.SNI) > 0 || len(m.ALPN) > 0
		t.needs.Head = t.needs.Head || len(m.Host) > 0 || len(m.PathPrefix) > 0
		t.needs.Kind = t.needs.Kind || m.H2C != H2CAny || m.Protocol != ProtocolAny
	}
	return t, nil
}

func clone[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append([]T(nil), s...)
}

// Needs returns what the table's routes look at.
func (t *Table) Needs() Needs { return t.needs }

// Routes returns the table's routes. The caller must not modify them.
func (t *Table) Routes() []Route { return t.routes }

// Conn is what is known of a connection when it is routed. The caller fills it from the
// sniffer's results; Match only reads it and does not keep it.
type Conn struct {
	Protocol Protocol
	H2C      bool                   // the connection started with the HTTP/2 prior-knowledge preface
	Head     *httpsniff.Head        // a parsed HTTP/1 head, or nil
	Hello    *httpsniff.ClientHello // a parsed TLS ClientHello, or nil
	Source   netip.Addr             // the client's address; the zero Addr matches no Source condition
}

// Match returns the index of the first route of t that c matches, and its pool; or -1, -1
// when none does. It allocates nothing.
func (t *Table) Match(c *Conn) (route, pool int) {
	// The names are trimmed once, when a route first asks for them.
	var host, sni []byte
	var hostDone, sniDone bool
	for i := range t.routes {
		m := &t.routes[i].Match
		if m.Protocol != ProtocolAny && m.Protocol != c.Protocol ||
			m.H2C == H2CYes && !c.H2C || m.H2C == H2CNo && c.H2C {
			continue
		}
		if len(m.Host) > 0 {
			if !hostDone {
				hostDone = true
				if c.Head != nil && c.Head.Host != nil {
					host = trimName(stripPort(c.Head.Host))
				}
			}
			if host == nil || !anyName(m.Host, host) {
				continue
			}
		}
		if len(m.SNI) > 0 {
			if !sniDone {
				sniDone = true
				if c.Hello != nil {
					sni = trimName(c.Hello.ServerName())
				}
			}
			if sni == nil || !anyName(m.SNI, sni) {
				continue
			}
		}
		if len(m.ALPN) > 0 && !anyALPN(m.ALPN, c.Hello) ||
			len(m.PathPrefix) > 0 && !anyPrefix(m.PathPrefix, c.Head) ||
			len(m.Source) > 0 && !anyPrefixContains(m.Source, c.Source.Unmap()) {
			continue
		}
		return i, t.routes[i].Pool
	}
	return -1, -1
}

func anyName(names []Name, lower []byte) bool {
	for _, n := range names {
		if n.matches(lower) {
			return true
		}
	}
	return false
}

func anyALPN(protos []string, h *httpsniff.ClientHello) bool {
	if h == nil {
		return false
	}
	for _, p := range protos {
		if h.HasALPN(p) {
			return true
		}
	}
	return false
}

func anyPrefix(prefixes []string, h *httpsniff.Head) bool {
	if h == nil {
		return false
	}
	p := requestPath(h.Target)
	for _, pre := range prefixes {
		if len(p) >= len(pre) && string(p[:len(pre)]) == pre {
			return true
		}
	}
	return false
}

func anyPrefixContains(prefixes []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// requestPath returns the path of a request target (RFC 9112 §3.2): origin-form
// "/a/b?q" gives "/a/b"; absolute-form "http://h:80/a?q" gives "/a" ("/" with no path);
// "*" and authority-form give nil.
func requestPath(target []byte) []byte {
	if len(target) == 0 {
		return nil
	}
	if target[0] != '/' {
		i := indexString(target, "://")
		if i < 0 {
			return nil
		}
		rest := target[i+3:]
		j := 0
		for j < len(rest) && rest[j] != '/' && rest[j] != '?' && rest[j] != '#' {
			j++
		}
		if j == len(rest) || rest[j] != '/' {
			return rootPath
		}
		target = rest[j:]
	}
	for i, c := range target {
		if c == '?' || c == '#' {
			return target[:i]
		}
	}
	return target
}

var rootPath = []byte("/")

func indexString(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

// stripPort removes the port from a Host header value: "a.test:8080" is "a.test",
// "[::1]:80" is "[::1]".
func stripPort(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		for i, c := range h {
			if c == ']' {
				return h[:i+1]
			}
		}
		return h
	}
	for i := len(h) - 1; i >= 0; i-- {
		switch c := h[i]; {
		case c == ':':
			return h[:i]
		case c < '0' || c > '9':
			return h
		}
	}
	return h
}

// trimName removes a trailing dot. It returns nil for an empty name.
func trimName(name []byte) []byte {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if len(name) == 0 {
		return nil
	}
	return name
}
