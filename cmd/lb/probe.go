package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"lb/health"
	"lb/l4"
)

func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "TCP-dial every backend once and print a table; exit 0 if all are up, 1 if any is down",
		Flags: withEnv(serversFlag, stickyCookieFlag,
			&cli.DurationFlag{Name: "health-timeout", Value: time.Second, Usage: "dial timeout per backend"},
		),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			backends, err := loadServers(c.String("servers"))
			if err != nil {
				return err
			}
			results := health.ProbeAll(c.Context, backends, c.Duration("health-timeout"))
			if name := c.String("sticky-cookie"); name != "" {
				fmt.Fprintf(c.App.Writer, "sticky: %s; a client's cookie value is its backend's ID\n", stickyMode(l4.Sticky{Cookie: name}))
			}
			if down := printProbe(c.App.Writer, results); down > 0 {
				return cli.Exit(fmt.Sprintf("lb: %d of %d backends down", down, len(results)), exitFailure)
			}
			return nil
		},
	}
}

// printProbe writes the probe table and returns how many backends are down.
func printProbe(w io.Writer, results []health.Result) (down int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tID\tSTATE\tCONNECT\tERROR")
	for _, r := range results {
		state, latency, errText := "up", r.Latency.Round(10*time.Microsecond).String(), ""
		if !r.Up {
			state, latency, errText = "down", "-", r.Err.Error()
			down++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Backend.Addr, r.Backend.ID, state, latency, errText)
	}
	tw.Flush()
	return down
}
