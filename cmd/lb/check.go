package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"lb/config"
	"lb/proxyhdr"
)

var configFlag = &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "`FILE` (lb.yaml) of listeners, routes and pools; instead of --servers and --listen"}

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:         "check",
		Usage:        "validate the config file (or the flags) as lb serve would, without starting; exit 0 if valid, 2 if not",
		Flags:        withEnv(append(append([]cli.Flag{configFlag, serversFlag, listenFlag, portFlag}, routingFlags()...), balanceFlags()...)...),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			o, err := parseOptions(c)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(c, o)
			if err != nil {
				return err
			}
			backends := 0
			for _, p := range cfg.Pools {
				backends += len(p.Backends)
			}
			name := cfg.File
			if name == "" {
				name = "flags"
			}
			fmt.Fprintf(c.App.Writer, "%s: ok: %d listeners, %d pools, %d backends\n", name, len(cfg.Listeners), len(cfg.Pools), backends)
			return nil
		},
	}
}

// loadConfig returns what lb serves: the config file of --config, or the one listener, one
// pool and catch-all route of --servers and --listen. Every mistake is bad input: exit 2,
// and a config file's mistakes say FILE:LINE:COL.
func loadConfig(c *cli.Context, o options) (*config.Config, error) {
	path := c.String("config")
	if path == "" {
		// discover= lines are checked here; their backends come from DNS once lb serves.
		backends, _, err := loadServerFile(c.String("servers"))
		if err != nil {
			return nil, err
		}
		return config.FromFlags(o.listen, backends, poolDefaults(o)), nil
	}
	for _, f := range []string{"servers", "listen", "port"} {
		if c.IsSet(f) {
			return nil, badInput{fmt.Errorf("--%s with --config: the config file names its listeners and servers; give one or the other", f)}
		}
	}
	cfg, err := config.Load(path, poolDefaults(o))
	if err != nil {
		return nil, badInput{err}
	}
	return cfg, nil
}

// poolDefaults are the pool settings of the flags: what a pool of the config file does not
// set itself.
func poolDefaults(o options) config.Pool {
	send := ""
	if o.clients.sendProxy != proxyhdr.None {
		send = o.clients.sendProxy.String()
	}
	return config.Pool{
		Balance: o.ring.Balance.String(),
		Health: config.Health{
			Interval: o.health.Interval,
			Timeout:  o.health.Timeout,
			Rise:     o.health.Rise,
			Fall:     o.health.Fall,
			HTTPPath: o.health.HTTPPath,
		},
		SendProxy:         send,
		StickyCookie:      o.l4.Sticky.Cookie,
		StickyCookieAttrs: o.l4.Sticky.CookieAttrs,
		SessionCookie:     o.sessions.cookie,
		ConnectTimeout:    o.l4.ConnectTimeout,
		IdleTimeout:       o.l4.IdleTimeout,
	}
}
