package config

import (
	"net"
	"reflect"
	"strings"

	"lb/route"
)

// validate checks what spans several places of the file.
func (p *parser) validate(cfg *Config) error {
	firstListen, firstName := map[string]int{}, map[string]int{}
	for li, l := range cfg.Listeners {
		key := normalListen(l.Listen)
		if first, ok := firstListen[key]; ok {
			return p.errAt(p.listenNodes[li], "%s is listened on twice (first on line %d): give each listener its own address, and put all its routes under it", l.Listen, first)
		}
		firstListen[key] = p.listenNodes[li].Line
		if first, ok := firstName[l.Name]; ok && l.Name != "" {
			return p.errAt(p.listenNodes[li], "the listener name %s is given twice (first on line %d): give each listener its own", l.Name, first)
		}
		firstName[l.Name] = l.Line
		catchAll := 0
		for ri, r := range l.Routes {
			nodes := p.routeNodes[li][ri]
			if r.Pool < 0 {
				return p.errAt(nodes.pool, "unknown pool %q: want one of the pools: %s", r.PoolName, keyList(poolNames(cfg)))
			}
			if catchAll != 0 {
				return p.errAt(nodes.route, "this route is never reached: the route on line %d before it has no match and takes every connection; move that one last", catchAll)
			}
			if reflect.DeepEqual(r.Match, route.Match{}) {
				catchAll = r.Line
			}
		}
	}
	return nil
}

func poolNames(cfg *Config) []string {
	var out []string
	for _, p := range cfg.Pools {
		out = append(out, p.Name)
	}
	return out
}

// normalListen makes ":80", "0.0.0.0:80" and "[::]:80" compare equal (on Linux they bind
// the same port), and lower-cases names.
func normalListen(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if host == "0.0.0.0" || host == "::" {
		host = ""
	}
	return strings.ToLower(host) + " " + port
}
