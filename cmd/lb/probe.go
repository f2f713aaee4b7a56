package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"lb/app"
	"lb/config"
)

func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "check every backend once as lb serve would (TCP, or HTTP with --health-http, check= or a pool's health; with the PROXY header it sends) and print a table; exit 0 if all are up, 1 if any is down",
		Flags: withEnv(configFlag, serversFlag, resolverFlag, sendProxyFlag, stickyCookieFlag, sessionCookieFlag, sessionStoreFlag, clusterFlag,
			&cli.DurationFlag{Name: "health-timeout", Value: time.Second, Usage: "timeout of each backend's check (and the session store's ping)"},
			healthHTTPFlag, expectStatusFlag,
		),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			resolver, err := resolverOf(c.String("resolver"))
			if err != nil {
				return err
			}
			expect, err := parseExpect(c)
			if err != nil {
				return err
			}
			timeout := c.Duration("health-timeout")
			src := app.Source{ConfigFile: c.String("config"), ServersFile: c.String("servers"), Defaults: config.Pool{
				Balance:        "roundrobin",
				Health:         config.Health{Interval: time.Second, Timeout: timeout, Rise: 1, Fall: 1, HTTPPath: c.String("health-http")},
				SendProxy:      sendProxy(c),
				StickyCookie:   c.String("sticky-cookie"),
				SessionCookie:  c.String("session-cookie"),
				ConnectTimeout: timeout,
			}}
			if err := checked(c, src.Defaults.Check()); err != nil {
				return err
			}
			if src.ConfigFile != "" {
				if c.IsSet("servers") {
					return badInput{fmt.Errorf("--servers with --config: the config file names its servers; give one or the other")}
				}
				src.ServersFile = ""
			}
			cfg, err := src.Load()
			if err != nil {
				return badInput{err}
			}
			results := app.Probe(c.Context, cfg, expect, resolver)
			so := app.Sessions{Store: c.String("session-store"), Cluster: c.String("cluster-name")}
			var storeErr error
			for _, p := range cfg.Pools {
				fmt.Fprintf(c.App.Writer, "%ssticky: %s\n", poolPrefix(cfg, p), app.Sticky(p, so))
				if p.SessionCookie != "" && storeErr == nil {
					if storeErr = app.PingSessions(c.Context, so, timeout, resolver); storeErr != nil {
						fmt.Fprintf(c.App.Writer, "session store: unreachable: %v\n", storeErr)
					}
				}
			}
			down := printProbe(c.App.Writer, results, cfg.File != "")
			switch {
			case down > 0:
				return cli.Exit(fmt.Sprintf("lb: %d of %d backends down", down, len(results)), exitFailure)
			case storeErr != nil:
				return cli.Exit("lb: the session store is unreachable", exitFailure)
			}
			return nil
		},
	}
}

// poolPrefix names the pool at the start of a line, for a config file's pools.
func poolPrefix(cfg *config.Config, p config.Pool) string {
	if cfg.File == "" {
		return ""
	}
	return "pool " + p.Name + ": "
}

// printProbe writes the probe table, with a POOL column for a config file's pools, and
// returns how many backends are down.
func printProbe(w io.Writer, results []app.PoolResult, pools bool) (down int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	pool := func(name string) string {
		if pools {
			return name + "\t"
		}
		return ""
	}
	fmt.Fprintln(tw, pool("POOL")+"BACKEND\tID\tSTATE\tSTATUS\tTIME\tERROR")
	for _, r := range results {
		state, latency, errText := "up", r.Latency.Round(10*time.Microsecond).String(), ""
		if !r.Up {
			state, latency, errText = "down", "-", r.Err.Error()
			down++
		}
		status := "-" // a TCP check, or an HTTP one that got no answer
		if r.Status != 0 {
			status = strconv.Itoa(r.Status)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\n", pool(r.Pool), r.Backend.Addr, r.Backend.ID, state, status, latency, errText)
	}
	tw.Flush()
	return down
}
