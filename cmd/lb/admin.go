package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"lb/admin"
	"lb/app"
	"lb/config"
	"lb/control"
)

var (
	adminListenFlag   = &cli.StringFlag{Name: "admin-listen", Usage: "`ADDR` of the admin listener (status page, /healthz, /readyz, the backend API), e.g. 127.0.0.1:9090 or unix:/run/lb/admin.sock (mode 0600); off unless set"}
	adminTokenFlag    = &cli.StringFlag{Name: "admin-token", Usage: "`TOKEN` every admin request but /healthz and /readyz must bring as Authorization: Bearer TOKEN; required when --admin-listen is not loopback"}
	metricsListenFlag = &cli.StringFlag{Name: "metrics-listen", Usage: "`ADDR` of a listener that serves only GET /metrics, /healthz and /readyz, without a token, e.g. :9100; off unless set"}
)

// adminFlags are the flags of the admin and metrics listeners, for serve and demo.
func adminFlags() []cli.Flag {
	return []cli.Flag{adminListenFlag, adminTokenFlag, metricsListenFlag}
}

// parseAdminOptions checks the admin flags: listen addresses that parse (host:port or
// unix:PATH), a token with an admin address that is not loopback, and two different
// addresses.
func parseAdminOptions(c *cli.Context) (app.Admin, error) {
	o := app.Admin{Listen: c.String("admin-listen"), Token: c.String("admin-token"), Metrics: c.String("metrics-listen")}
	if o.Metrics != "" && !validAdminListen(o.Metrics) {
		return o, badInput{fmt.Errorf("--metrics-listen %s: want host:port or unix:PATH, e.g. :9100 or 127.0.0.1:9100", o.Metrics)}
	}
	if o.Listen == "" {
		return o, nil
	}
	if !validAdminListen(o.Listen) {
		return o, badInput{fmt.Errorf("--admin-listen %s: want host:port or unix:PATH, e.g. 127.0.0.1:9090, [::1]:9090 or unix:/run/lb/admin.sock", o.Listen)}
	}
	if o.Listen == o.Metrics {
		return o, badInput{fmt.Errorf("--admin-listen and --metrics-listen are both %s: give the metrics listener its own address", o.Listen)}
	}
	if strings.ContainsAny(o.Token, " \t\r\n") {
		return o, badInput{errors.New("--admin-token: want one word without spaces, e.g. from: openssl rand -hex 16")}
	}
	if _, unix := admin.IsUnix(o.Listen); o.Token == "" && !unix && !isLoopback(o.Listen) {
		return o, badInput{fmt.Errorf("--admin-listen %s is not a loopback address: set --admin-token (or LB_ADMIN_TOKEN), or listen on 127.0.0.1, [::1] or unix:PATH", o.Listen)}
	}
	return o, nil
}

// validAdminListen reports whether addr is host:port (see config.ValidListen) or unix:PATH.
func validAdminListen(addr string) bool {
	if path, ok := admin.IsUnix(addr); ok {
		return path != ""
	}
	return config.ValidListen(addr)
}

// isLoopback reports whether every address addr listens on is a loopback one. An empty host
// means every interface; a name other than localhost may resolve anywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// The client commands: lb backends, lb drain ID, lb enable ID.

var clientAdminListenFlag = &cli.StringFlag{Name: "admin-listen", Value: "127.0.0.1:9090", Usage: "`ADDR` of lb's admin listener: host:port or unix:PATH"}

func clientFlags() []cli.Flag {
	return withEnv(clientAdminListenFlag, adminTokenFlag)
}

func backendsCommand() *cli.Command {
	return &cli.Command{
		Name:         "backends",
		Usage:        "list the backends of a running lb (GET /backends on --admin-listen)",
		Flags:        clientFlags(),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			list, err := adminClient(c).Backends(c.Context)
			if err != nil {
				return clientError(err)
			}
			printBackends(c.App.Writer, list)
			return nil
		},
	}
}

// stateCommand is lb drain or lb enable.
func stateCommand(name, usage string) *cli.Command {
	return &cli.Command{
		Name:         name,
		Usage:        usage,
		ArgsUsage:    "ID",
		Flags:        clientFlags(),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return badInput{fmt.Errorf("lb %s takes one backend id, after the flags: lb %s [--admin-listen ADDR] ID (lb backends lists the ids)", name, name)}
			}
			b, err := adminClient(c).SetState(c.Context, c.Args().First(), name)
			if err != nil {
				return clientError(err)
			}
			printBackends(c.App.Writer, []control.Backend{b})
			return nil
		},
	}
}

func adminClient(c *cli.Context) admin.Client {
	return admin.Client{Addr: c.String("admin-listen"), Token: c.String("admin-token")}
}

// clientError is bad input when the admin API refused the call (an unknown id, a wrong
// token); an lb that does not answer is a failure.
func clientError(err error) error {
	var refused *admin.RefusedError
	if errors.As(err, &refused) {
		return badInput{err}
	}
	return err
}

// printBackends writes the table of lb backends, in the style of lb probe's.
func printBackends(w io.Writer, list []control.Backend) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tID\tSTATE\tWEIGHT\tACTIVE\tTOTAL\tLAST PROBE\tERROR")
	for _, b := range list {
		probe, errText := "-", ""
		if p := b.LastProbe; p != nil {
			probe = fmt.Sprintf("%.2fms %s ago", p.LatencyMS, time.Since(p.At).Round(time.Second))
			if !p.OK {
				probe, errText = fmt.Sprintf("failed %s ago", time.Since(p.At).Round(time.Second)), p.Error
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", b.Addr, b.ID, b.State, b.Weight, b.Active, b.Connections, probe, errText)
	}
	tw.Flush()
}
