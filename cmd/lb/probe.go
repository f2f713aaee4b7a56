package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"lb/config"
	"lb/health"
)

func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "check every backend once (TCP, or HTTP with --health-http or check=) and print a table; exit 0 if all are up, 1 if any is down",
		Flags: withEnv(configFlag, serversFlag, resolverFlag, stickyCookieFlag, sessionCookieFlag, sessionStoreFlag, clusterFlag,
			&cli.DurationFlag{Name: "health-timeout", Value: time.Second, Usage: "timeout of each backend's check (and the session store's ping)"},
			healthHTTPFlag, expectStatusFlag,
		),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if err := useResolver(c.String("resolver")); err != nil {
				return err
			}
			if c.String("config") != "" {
				return probeConfig(c)
			}
			backends, sources, err := loadServerFile(c.String("servers"))
			if err != nil {
				return err
			}
			timeout := c.Duration("health-timeout")
			backends, err = withDiscovered(c.Context, backends, sources)
			if err != nil {
				return err
			}
			cfg := health.Config{Timeout: timeout}
			if err := parseHealthHTTP(c, &cfg); err != nil {
				return err
			}
			results := health.ProbeAllWith(c.Context, backends, cfg)
			so := sessionOptions{cookie: c.String("session-cookie"), store: c.String("session-store"), cluster: c.String("cluster-name")}
			fmt.Fprintf(c.App.Writer, "sticky: %s\n", stickyMode(c.String("sticky-cookie"), so))
			storeErr := pingSessionStore(c.Context, so, timeout)
			if storeErr != nil {
				fmt.Fprintf(c.App.Writer, "session store: unreachable: %v\n", storeErr)
			}
			down := printProbe(c.App.Writer, results)
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

// printProbe writes the probe table and returns how many backends are down.
func printProbe(w io.Writer, results []health.Result) (down int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tID\tSTATE\tSTATUS\tTIME\tERROR")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Backend.Addr, r.Backend.ID, state, status, latency, errText)
	}
	tw.Flush()
	return down
}

// probeConfig probes every pool of the --config file and prints the table with a POOL
// column; a backend in two pools is probed for each.
func probeConfig(c *cli.Context) error {
	if c.IsSet("servers") {
		return badInput{fmt.Errorf("--servers with --config: the config file names its servers; give one or the other")}
	}
	cfg, err := config.Load(c.String("config"), config.Pool{
		Balance:        "roundrobin",
		StickyCookie:   c.String("sticky-cookie"),
		SessionCookie:  c.String("session-cookie"),
		ConnectTimeout: c.Duration("health-timeout"),
	})
	if err != nil {
		return badInput{err}
	}
	timeout := c.Duration("health-timeout")
	tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tBACKEND\tID\tSTATE\tCONNECT\tERROR")
	down, total := 0, 0
	for _, p := range cfg.Pools {
		for _, r := range health.ProbeAll(c.Context, p.Backends, timeout) {
			state, latency, errText := "up", r.Latency.Round(10*time.Microsecond).String(), ""
			if !r.Up {
				state, latency, errText = "down", "-", r.Err.Error()
				down++
			}
			total++
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, r.Backend.Addr, r.Backend.ID, state, latency, errText)
		}
	}
	tw.Flush()
	if down > 0 {
		return cli.Exit(fmt.Sprintf("lb: %d of %d backends down", down, total), exitFailure)
	}
	return nil
}
