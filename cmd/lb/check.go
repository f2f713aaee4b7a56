package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
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
			src, err := sourceOf(c, o)
			if err != nil {
				return err
			}
			// discover= lines are checked here; their backends come from DNS once lb serves.
			cfg, err := src.Load()
			if err != nil {
				return badInput{err}
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
