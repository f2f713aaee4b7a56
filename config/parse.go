package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"lb/route"
	"lb/serversfile"
)

// parser holds what the three steps share.
type parser struct {
	file     string
	dir      string
	defaults Pool
	// Where things stand, for the errors of provision and validate.
	routeNodes   [][]routeNodes // per listener, per route
	listenNodes  []*yaml.Node
	serversFiles []*yaml.Node // per pool: its servers_file value, or nil
}

type routeNodes struct{ route, pool *yaml.Node }

// field is one key: value of a mapping.
type field struct{ key, val *yaml.Node }

func (p *parser) errAt(n *yaml.Node, format string, args ...any) *Error {
	return &Error{File: p.file, Line: n.Line, Col: n.Column, Msg: fmt.Sprintf(format, args...)}
}

// topKeys are the keys of the config file itself.
var topKeys = []string{"listeners", "pools", "engine"}

// parse reads the YAML nodes into a Config, checking every value where it stands.
func (p *parser) parse(data []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, p.syntaxError(err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &Error{File: p.file, Msg: "empty config: want listeners: and pools:"}
	}
	top, err := p.mapping(doc.Content[0], "the config", topKeys...)
	if err != nil {
		return nil, err
	}
	cfg := &Config{File: p.file}
	var listeners *yaml.Node
	for _, f := range top {
		switch f.key.Value {
		case "listeners":
			listeners = f.val
		case "pools":
			if cfg.Pools, err = p.pools(f.val); err != nil {
				return nil, err
			}
		case "engine":
			if cfg.Engine, err = p.scalar(f.val, "engine"); err != nil {
				return nil, err
			}
			if !slices.Contains(Engines, cfg.Engine) {
				return nil, p.errAt(f.val, "bad engine %q: want %s", cfg.Engine, WantEngine)
			}
		}
	}
	if listeners == nil {
		return nil, p.errAt(doc.Content[0], "no listeners: add listeners: with at least one listen: address and its routes:")
	}
	if cfg.Pools == nil {
		return nil, p.errAt(doc.Content[0], "no pools: add pools: with at least one named pool of servers:")
	}
	items, err := p.sequence(listeners, "listeners")
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, p.errAt(listeners, "no listeners: add at least one, e.g. - listen: 127.0.0.1:8080")
	}
	for _, n := range items {
		l, err := p.listener(n)
		if err != nil {
			return nil, err
		}
		cfg.Listeners = append(cfg.Listeners, l)
	}
	return cfg, nil
}

// syntaxError turns the YAML library's "yaml: line N: what" into FILE:N: what.
func (p *parser) syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: p.file, Msg: "bad YAML: " + msg, Err: err}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, what, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				e.Line, e.Msg = n, "bad YAML: "+what
			}
		}
	}
	return e
}

// listenerKeys are the keys of a listener.
var listenerKeys = []string{"listen", "name", "routes", "status"}

func (p *parser) listener(n *yaml.Node) (Listener, error) {
	fields, err := p.mapping(n, "a listener", listenerKeys...)
	if err != nil {
		return Listener{}, err
	}
	l := Listener{NoMatchStatus: DefaultNoMatchStatus, Line: n.Line}
	var routes *yaml.Node
	for _, f := range fields {
		switch f.key.Value {
		case "listen":
			if l.Listen, err = p.scalar(f.val, "listen"); err != nil {
				return l, err
			}
			if !ValidListen(l.Listen) {
				return l, p.errAt(f.val, "bad listen address %q: want host:port with a port from 0 to 65535, e.g. 127.0.0.1:8443, [::1]:8443 or :8443", l.Listen)
			}
			p.listenNodes = append(p.listenNodes, f.val)
		case "name":
			if l.Name, err = p.scalar(f.val, "name"); err != nil {
				return l, err
			}
			if !validSocketName(l.Name) {
				return l, p.errAt(f.val, "bad listener name %q: want 1 to 255 letters, digits, '.', '_' or '-', not admin or metrics (the admin listeners' names), e.g. web", l.Name)
			}
		case "routes":
			routes = f.val
		case "status":
			s, err := p.scalar(f.val, "status")
			if err != nil {
				return l, err
			}
			if l.NoMatchStatus, err = strconv.Atoi(s); err != nil || l.NoMatchStatus < 400 || l.NoMatchStatus > 599 {
				return l, p.errAt(f.val, "bad status %q: want an HTTP error status from 400 to 599 for HTTP clients no route takes (default 503)", s)
			}
		}
	}
	if l.Listen == "" {
		return l, p.errAt(n, "listener without listen: add listen: host:port")
	}
	if routes == nil {
		return l, p.errAt(n, "listener %s without routes: add routes:, e.g. - pool: NAME", l.Listen)
	}
	items, err := p.sequence(routes, "routes")
	if err != nil {
		return l, err
	}
	if len(items) == 0 {
		return l, p.errAt(routes, "no routes: add at least one, e.g. - pool: NAME")
	}
	var nodes []routeNodes
	for _, rn := range items {
		r, poolNode, err := p.route(rn)
		if err != nil {
			return l, err
		}
		l.Routes = append(l.Routes, r)
		nodes = append(nodes, routeNodes{route: rn, pool: poolNode})
	}
	p.routeNodes = append(p.routeNodes, nodes)
	return l, nil
}

// routeKeys are the keys of a route.
var routeKeys = []string{"match", "pool"}

func (p *parser) route(n *yaml.Node) (Route, *yaml.Node, error) {
	fields, err := p.mapping(n, "a route", routeKeys...)
	if err != nil {
		return Route{}, nil, err
	}
	r := Route{Line: n.Line}
	var poolNode *yaml.Node
	for _, f := range fields {
		switch f.key.Value {
		case "match":
			if r.Match, err = p.match(f.val); err != nil {
				return r, nil, err
			}
		case "pool":
			if r.PoolName, err = p.scalar(f.val, "pool"); err != nil {
				return r, nil, err
			}
			poolNode = f.val
		}
	}
	if poolNode == nil {
		return r, nil, p.errAt(n, "route without pool: add pool: NAME, one of the pools: below")
	}
	return r, poolNode, nil
}

// matchKeys are the keys of a route's match.
var matchKeys = []string{"sni", "alpn", "host", "path_prefix", "h2c", "protocol", "source"}

func (p *parser) match(n *yaml.Node) (route.Match, error) {
	var m route.Match
	fields, err := p.mapping(n, "match", matchKeys...)
	if err != nil {
		return m, err
	}
	for _, f := range fields {
		k := f.key.Value
		if k == "h2c" || k == "protocol" {
			s, err := p.scalar(f.val, k)
			if err != nil {
				return m, err
			}
			if k == "h2c" {
				switch b, err := strconv.ParseBool(s); {
				case err != nil:
					return m, p.errAt(f.val, "bad h2c %q: want true (only the HTTP/2 prior-knowledge preface) or false", s)
				case b:
					m.H2C = route.H2CYes
				default:
					m.H2C = route.H2CNo
				}
				continue
			}
			if m.Protocol, err = route.ParseProtocol(s); err != nil {
				return m, p.errAt(f.val, "bad protocol %q: want http, tls or other", s)
			}
			continue
		}
		values, err := p.scalars(f.val, k)
		if err != nil {
			return m, err
		}
		for i, v := range values {
			at := f.val
			if f.val.Kind == yaml.SequenceNode {
				at = f.val.Content[i]
			}
			switch k {
			case "sni", "host":
				name, err := route.ParseName(v)
				if err != nil {
					return m, p.errAt(at, "bad %s %q: want a host name such as a.example.com, or *.example.com for every name under example.com", k, v)
				}
				if k == "sni" {
					m.SNI = append(m.SNI, name)
				} else {
					m.Host = append(m.Host, name)
				}
			case "alpn":
				if len(v) > 255 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }) {
					return m, p.errAt(at, "bad alpn %q: want a protocol name such as h2 or http/1.1", v)
				}
				m.ALPN = append(m.ALPN, v)
			case "path_prefix":
				if !strings.HasPrefix(v, "/") || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r > '~' || r == '?' || r == '#' }) {
					return m, p.errAt(at, "bad path_prefix %q: want the start of a path, beginning with /, e.g. /api/", v)
				}
				m.PathPrefix = append(m.PathPrefix, v)
			case "source":
				pre, err := parseSource(v)
				if err != nil {
					return m, p.errAt(at, "bad source %q: want a client address or CIDR, e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32", v)
				}
				m.Source = append(m.Source, pre)
			}
		}
	}
	if msg := contradiction(m); msg != "" {
		return m, p.errAt(n, "this match never holds: %s", msg)
	}
	return m, nil
}

// contradiction says why a match cannot hold, or "".
func contradiction(m route.Match) string {
	tlsKey, httpKey := "", ""
	switch {
	case len(m.SNI) > 0:
		tlsKey = "sni"
	case len(m.ALPN) > 0:
		tlsKey = "alpn"
	}
	switch {
	case len(m.Host) > 0:
		httpKey = "host"
	case len(m.PathPrefix) > 0:
		httpKey = "path_prefix"
	}
	switch {
	case tlsKey != "" && httpKey != "":
		return fmt.Sprintf("%s is read from TLS, %s from HTTP/1: put them in separate routes", tlsKey, httpKey)
	case tlsKey != "" && m.Protocol != route.ProtocolAny && m.Protocol != route.ProtocolTLS:
		return fmt.Sprintf("%s is read from TLS, and protocol is %s", tlsKey, m.Protocol)
	case httpKey != "" && m.Protocol != route.ProtocolAny && m.Protocol != route.ProtocolHTTP:
		return fmt.Sprintf("%s is read from HTTP/1, and protocol is %s", httpKey, m.Protocol)
	case httpKey != "" && m.H2C == route.H2CYes:
		return fmt.Sprintf("%s is read from HTTP/1, and h2c is true (HTTP/2 prior knowledge)", httpKey)
	case tlsKey != "" && m.H2C == route.H2CYes:
		return fmt.Sprintf("%s is read from TLS, and h2c is true (cleartext HTTP/2)", tlsKey)
	case m.H2C == route.H2CYes && m.Protocol != route.ProtocolAny && m.Protocol != route.ProtocolHTTP:
		return fmt.Sprintf("h2c is true (HTTP/2 prior knowledge), and protocol is %s", m.Protocol)
	}
	return ""
}

func parseSource(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// poolKeys are the keys of a pool.
var poolKeys = []string{"servers", "servers_file", "balance", "health", "sticky_cookie", "sticky_cookie_attrs", "session_cookie", "send_proxy", "connect_timeout", "idle_timeout"}

func (p *parser) pools(n *yaml.Node) ([]Pool, error) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return nil, p.errAt(n, "pools must be a mapping of pool names to pools, e.g. web: {servers: [127.0.0.1:9001]}")
	}
	if len(n.Content) == 0 {
		return nil, p.errAt(n, "no pools: add at least one named pool of servers:")
	}
	seen := map[string]int{}
	var pools []Pool
	for i := 0; i < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		name := key.Value
		if key.Kind != yaml.ScalarNode || !validPoolName(name) {
			return nil, p.errAt(key, "bad pool name %q: want 1-64 letters, digits, '-', '_' or '.'", name)
		}
		if first, ok := seen[name]; ok {
			return nil, p.errAt(key, "pool %q defined twice (first on line %d): give each pool its own name", name, first)
		}
		seen[name] = key.Line
		pool, err := p.pool(name, key, val)
		if err != nil {
			return nil, err
		}
		pools = append(pools, pool)
	}
	return pools, nil
}

func (p *parser) pool(name string, key, n *yaml.Node) (Pool, error) {
	pool := p.defaults
	pool.Name, pool.Backends, pool.Line = name, nil, key.Line
	fields, err := p.mapping(n, "pool "+name, poolKeys...)
	if err != nil {
		return pool, err
	}
	nodes := map[string]*yaml.Node{} // by key ("health.interval"), for Check's errors
	var servers, serversFile *yaml.Node
	for _, f := range fields {
		k := f.key.Value
		switch k {
		case "servers":
			servers = f.val
			inline, err := p.inlineServers(name, f.val)
			if err != nil {
				return pool, err
			}
			pool.Backends, pool.Discover, pool.ServersFrom = inline.Backends, inline.Discover, p.file
			continue
		case "health":
			if pool.Health, err = p.health(f.val, pool.Health, nodes); err != nil {
				return pool, err
			}
			continue
		}
		v, err := p.scalar(f.val, k)
		if err != nil {
			return pool, err
		}
		nodes[k] = f.val
		ok := true
		switch k {
		case "servers_file":
			serversFile = f.val
			if v == "" {
				return pool, p.errAt(f.val, "bad %s %q: want %s", k, v, "the path of a servers file, relative to this file")
			}
		case "balance":
			pool.Balance = v
		case "sticky_cookie":
			pool.StickyCookie = v
		case "session_cookie":
			pool.SessionCookie = v
		case "sticky_cookie_attrs":
			pool.StickyCookieAttrs = v
		case "send_proxy":
			pool.SendProxy, ok = v, v != "" // off: none
			if v == "off" {
				pool.SendProxy, ok = "", true
			}
		case "connect_timeout":
			pool.ConnectTimeout, ok = duration(v)
		case "idle_timeout":
			pool.IdleTimeout, ok = duration(v)
		}
		if !ok {
			return pool, p.badSetting(nodes, Invalid{Key: k, Want: pool.wantOf(k)}, key)
		}
	}
	if bad := pool.Check(); bad != nil {
		return pool, p.badSetting(nodes, *bad, key)
	}
	switch {
	case servers != nil && serversFile != nil:
		return pool, p.errAt(serversFile, "pool %s has both servers and servers_file: keep one", name)
	case servers == nil && serversFile == nil:
		return pool, p.errAt(key, "pool %s has no servers: add servers: [host:port, ...] or servers_file: FILE", name)
	}
	p.serversFiles = append(p.serversFiles, serversFile)
	return pool, nil
}

// badSetting is the error of a setting out of its range, at the node that set it (the
// pool's key when it came from the defaults).
func (p *parser) badSetting(nodes map[string]*yaml.Node, bad Invalid, pool *yaml.Node) *Error {
	n := nodes[bad.Key]
	if n == nil {
		return p.errAt(pool, "bad %s: want %s", strings.ReplaceAll(bad.Key, ".", " "), bad.Want)
	}
	return p.errAt(n, "bad %s %q: want %s", strings.ReplaceAll(bad.Key, ".", " "), n.Value, bad.Want)
}

// wantOf is what the setting of key allows, for a value of the wrong type.
func (Pool) wantOf(key string) string {
	switch key {
	case "connect_timeout", "health.interval", "health.timeout":
		return wantPositive
	case "idle_timeout":
		return wantIdle
	case "health.rise", "health.fall":
		return wantCount
	case "send_proxy":
		return wantProxy
	}
	return ""
}

// healthKeys are the keys of a pool's health.
var healthKeys = []string{"interval", "timeout", "rise", "fall", "http"}

func (p *parser) health(n *yaml.Node, h Health, nodes map[string]*yaml.Node) (Health, error) {
	fields, err := p.mapping(n, "health", healthKeys...)
	if err != nil {
		return h, err
	}
	for _, f := range fields {
		k := f.key.Value
		v, err := p.scalar(f.val, k)
		if err != nil {
			return h, err
		}
		nodes["health."+k] = f.val
		ok := true
		switch k {
		case "interval":
			h.Interval, ok = duration(v)
		case "timeout":
			h.Timeout, ok = duration(v)
		case "rise":
			h.Rise, err = strconv.Atoi(v)
			ok = err == nil
		case "fall":
			h.Fall, err = strconv.Atoi(v)
			ok = err == nil
		case "http":
			h.HTTPPath = v
		}
		if !ok {
			return h, p.badSetting(nodes, Invalid{Key: "health." + k, Want: Pool{}.wantOf("health." + k)}, f.key)
		}
	}
	return h, nil
}

// inlineServers reads servers: lines with the servers file's parser, so that both say the
// same things, and points its errors at the YAML line.
func (p *parser) inlineServers(pool string, n *yaml.Node) (*serversfile.File, error) {
	items, err := p.sequence(n, "servers")
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, p.errAt(n, "pool %s has no servers: add at least one, e.g. - 127.0.0.1:9001", pool)
	}
	var text strings.Builder
	for _, it := range items {
		v, err := p.scalar(it, "a server")
		if err != nil {
			return nil, err
		}
		if strings.ContainsAny(v, "\r\n#") {
			return nil, p.errAt(it, "bad server %q: want one line, host:port [weight=N] [id=NAME]", v)
		}
		text.WriteString(v)
		text.WriteByte('\n')
	}
	servers, err := serversfile.ParseFile(p.file, strings.NewReader(text.String()))
	var le *serversfile.LineError
	switch {
	case err == nil:
		for i := range servers.Discover {
			servers.Discover[i].Line = items[servers.Discover[i].Line-1].Line // the YAML line, for logs
		}
		return servers, nil
	case errorsAs(err, &le):
		at := n
		if le.Line >= 1 && le.Line <= len(items) {
			at = items[le.Line-1]
		}
		// The parser counts lines of its own text, one a server: say the YAML lines.
		reason := le.Reason
		if i := strings.Index(reason, "(first on line "); i >= 0 {
			var k int
			if _, err := fmt.Sscanf(reason[i:], "(first on line %d)", &k); err == nil && k >= 1 && k <= len(items) {
				reason = reason[:i] + fmt.Sprintf("(first on line %d)", items[k-1].Line)
			}
		}
		e := p.errAt(at, "pool %s: %s", pool, reason)
		e.Err = err
		return nil, e
	}
	return nil, err
}

// validSocketName reports whether name may name a listener: what systemd's
// FileDescriptorName= takes (no ':', at most 255 characters), in the characters a name needs,
// and not a name the admin listeners answer to.
func validSocketName(name string) bool {
	if len(name) == 0 || len(name) > 255 || name == "admin" || name == "metrics" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
