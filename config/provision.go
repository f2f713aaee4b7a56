package config

import (
	"errors"
	"fmt"
	"path/filepath"

	"lb/route"
	"lb/serversfile"
)

// provision reads the servers files and builds each listener's route table.
func (p *parser) provision(cfg *Config) error {
	for i := range cfg.Pools {
		n := p.serversFiles[i]
		if n == nil {
			continue
		}
		path := n.Value
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.dir, path)
		}
		servers, err := serversfile.LoadFile(path)
		if err != nil {
			var le *serversfile.LineError
			if !errors.As(err, &le) {
				err = fmt.Errorf("%w: the path is relative to the config file's directory", err)
			}
			e := p.errAt(n, "pool %s: servers_file: %v", cfg.Pools[i].Name, err)
			e.Err = err
			return e
		}
		cfg.Pools[i].Backends, cfg.Pools[i].Discover, cfg.Pools[i].ServersFrom = servers.Backends, servers.Discover, path
	}
	for li := range cfg.Listeners {
		l := &cfg.Listeners[li]
		routes := make([]route.Route, len(l.Routes))
		for ri := range l.Routes {
			r := &l.Routes[ri]
			r.Pool = -1
			for pi := range cfg.Pools {
				if cfg.Pools[pi].Name == r.PoolName {
					r.Pool = pi
				}
			}
			routes[ri] = route.Route{Match: r.Match, Pool: r.Pool}
		}
		tab, err := route.New(routes)
		if err != nil {
			return err // parse refused a listener without routes
		}
		l.Table = tab
	}
	return nil
}
