package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"lb/demo"
	"lb/serversfile"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "start three HTTP backends on loopback and lb in front of them, and print curl lines to try",
		Flags: withEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7777", Usage: "`ADDR` for lb to listen on"},
		}, append(append(routingFlags(), balanceFlags()...), adminFlags()...)...)...),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			o, err := parseOptions(c)
			if err != nil {
				return err
			}
			backends, stop, err := demo.Backends(3)
			if err != nil {
				return err
			}
			defer stop()
			o.Source.Servers = &serversfile.File{Backends: backends}
			return serve(c.Context, o, func(addr string) {
				url := "http://" + addr
				fmt.Fprintf(c.App.Writer, "lb demo: 3 backends behind %s. Try:\n"+
					"  curl %s/            # each new connection goes to the next backend\n"+
					"  curl %s/ %s/ %s/    # one keep-alive connection: one backend for all three\n"+
					"  curl -si %s/ | grep X-Backend\n"+
					"Ctrl-C to stop.\n", addr, url, url, url, url, url)
			})
		},
	}
}
