package config

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse feeds Parse any bytes: it never panics, every refusal is an *Error with a
// message, and every Config it accepts is complete (a table per listener, routes that name
// existing pools, backends in every pool). Seeds: the example of docs/configuration.md and the test configs,
// plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../testdata/routing/lb.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(minimal))
	f.Add([]byte("listeners:\n  - listen: :1\n    routes:\n      - match: {sni: [\"*.a\", b], alpn: h2, source: 10.0.0.0/8, h2c: false, protocol: tls}\n        pool: p\npools: {p: {servers: [\"[::1]:1 weight=3 id=x\"], health: {rise: 2}}}\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("lb.yaml", data, dir, flagDefaults)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Msg == "" {
				t.Fatalf("error %v (%T) is not a *Error with a message", err, err)
			}
			return
		}
		if len(cfg.Listeners) == 0 || len(cfg.Pools) == 0 {
			t.Fatal("accepted a config without listeners or pools")
		}
		for _, p := range cfg.Pools {
			if len(p.Backends) == 0 {
				t.Fatalf("pool %s without backends", p.Name)
			}
		}
		for _, l := range cfg.Listeners {
			if l.Table == nil || len(l.Table.Routes()) != len(l.Routes) {
				t.Fatalf("listener %s: table does not hold its routes", l.Listen)
			}
			for _, r := range l.Routes {
				if r.Pool < 0 || r.Pool >= len(cfg.Pools) || cfg.Pools[r.Pool].Name != r.PoolName {
					t.Fatalf("route to %q has pool index %d", r.PoolName, r.Pool)
				}
			}
		}
	})
}
