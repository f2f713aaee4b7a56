package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"lb/admin"
	"lb/app"
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

// parseAdminOptions reads the flags of the admin and metrics listeners (Options.Check checks them).
func parseAdminOptions(c *cli.Context) app.Admin {
	return app.Admin{Listen: c.String("admin-listen"), Token: c.String("admin-token"), Metrics: c.String("metrics-listen")}
}

// The client commands: lb backends, lb drain ID, lb enable ID, lb upgrade.

var clientAdminListenFlag = &cli.StringFlag{Name: "admin-listen", Value: "127.0.0.1:9090", Usage: "`ADDR` of lb's admin listener: host:port or unix:PATH"}

func clientFlags() []cli.Flag {
	return withEnv(clientAdminListenFlag, adminTokenFlag)
}

// clientCommand is a command that calls a running lb's admin API.
func clientCommand(name, usage, args string, action cli.ActionFunc) *cli.Command {
	return &cli.Command{Name: name, Usage: usage, ArgsUsage: args, Flags: clientFlags(), OnUsageError: usageError, Action: action}
}

func backendsCommand() *cli.Command {
	return clientCommand("backends", "list the backends of a running lb (GET /backends on --admin-listen)", "", func(c *cli.Context) error {
		list, err := adminClient(c).Backends(c.Context)
		if err != nil {
			return clientError(err)
		}
		admin.PrintBackends(c.App.Writer, list)
		return nil
	})
}

// stateCommand is lb drain or lb enable.
func stateCommand(name, usage string) *cli.Command {
	return clientCommand(name, usage, "ID", func(c *cli.Context) error {
		if c.NArg() != 1 {
			return badInput{fmt.Errorf("lb %s takes one backend id, after the flags: lb %s [--admin-listen ADDR] ID (lb backends lists the ids)", name, name)}
		}
		b, err := adminClient(c).SetState(c.Context, c.Args().First(), name)
		if err != nil {
			return clientError(err)
		}
		admin.PrintBackends(c.App.Writer, []control.Backend{b})
		return nil
	})
}

func upgradeCommand() *cli.Command {
	return clientCommand("upgrade", "replace a running lb by the binary at its path, refusing no connection (POST /upgrade, as SIGUSR2 does)", "", func(c *cli.Context) error {
		if err := adminClient(c).Upgrade(c.Context); err != nil {
			return clientError(err)
		}
		fmt.Fprintln(c.App.Writer, "upgraded: the new lb serves")
		return nil
	})
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
