// Command lb is a Layer-4 TCP load balancer that sniffs HTTP: `lb serve`, `lb probe`, `lb check`, `lb demo`.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"lb/app"
	"lb/config"
	"lb/serversfile"
	"lb/version"
)

// Exit statuses: 0 done, 1 (exitFailure) a runtime failure or a backend down (probe), 2
// (exitBadInput) bad input.
const exitFailure, exitBadInput = 1, 2

// upgrades is whether lb serve can be upgraded in place: in the binary, not in the tests
// that run its commands in their own process.
var upgrades bool

func main() {
	upgrades = true
	app := newApp()
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "lb:", err)
		os.Exit(exitCode(err))
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "lb",
		Usage:                "a Layer-4 TCP load balancer that sniffs HTTP for routing",
		Version:              version.String(),
		EnableBashCompletion: true,
		Commands: []*cli.Command{serveCommand(), probeCommand(), checkCommand(), demoCommand(), backendsCommand(), upgradeCommand(),
			stateCommand("drain", "stop new connections to a backend of a running lb; open ones finish (POST /backends/ID/drain)"),
			stateCommand("enable", "let a drained backend of a running lb take new connections again (POST /backends/ID/enable)")},
		OnUsageError: usageError,
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "lb: no command %q; run 'lb --help'\n", name)
			os.Exit(exitBadInput)
		},
	}
}

// badInput marks errors the user fixes by changing flags or files: exit status 2.
type badInput struct{ error }

func (e badInput) Unwrap() error { return e.error }

func usageError(c *cli.Context, err error, _ bool) error {
	return badInput{fmt.Errorf("%w (run 'lb %s --help')", err, c.Command.Name)}
}

func exitCode(err error) int {
	var coder cli.ExitCoder
	var line *serversfile.LineError
	var cfg *config.Error
	switch {
	case errors.As(err, &coder):
		return coder.ExitCode()
	case errors.As(err, &badInput{}), errors.As(err, &app.InputError{}), errors.As(err, &line), errors.As(err, &cfg):
		return exitBadInput
	}
	return exitFailure
}
