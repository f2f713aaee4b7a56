package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestExitCodes(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{errors.New("listen: address in use"), exitFailure},
		{badInput{errors.New("--rise: want 1 or more")}, exitBadInput},
		{fmt.Errorf("wrapped: %w", badInput{errors.New("x")}), exitBadInput},
		{cli.Exit("lb: 1 of 2 backends down", exitFailure), exitFailure},
	}
	for _, c := range cases {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// run runs the app with args and returns its error and what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	app.ExitErrHandler = func(*cli.Context, error) {} // return the error instead of exiting
	err := app.Run(append([]string{"lb"}, args...))
	return out.String(), err
}

func TestBadInputIsExit2BeforeAnythingStarts(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "servers.txt")
	os.WriteFile(bad, []byte("127.0.0.1:8000\nhttps://example.com:443\n"), 0o644)
	cases := map[string][]string{
		"flag value":   {"serve", "-f", bad, "--fall", "0"},
		"log format":   {"serve", "-f", bad, "--log-format", "xml"},
		"servers line": {"serve", "-f", bad, "--listen", "127.0.0.1:0"},
		"missing file": {"probe", "-f", filepath.Join(dir, "none.txt")},
		"unparsable":   {"serve", "--sniff-timeout", "soon"},
		"store":        {"serve", "-f", bad, "--session-cookie", "sid", "--session-store", "mysql://db/0"},
		"cookie name":  {"serve", "-f", bad, "--session-cookie", "a b"},
		"session ttl":  {"serve", "-f", bad, "--session-ttl", "0s"},
		"resolve":      {"serve", "-f", bad, "--resolve-every", "10ms"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := run(t, args...)
			if err == nil || exitCode(err) != exitBadInput {
				t.Fatalf("lb %s: err %v (exit %d), want exit %d", strings.Join(args, " "), err, exitCode(err), exitBadInput)
			}
		})
	}
	_, err := run(t, "serve", "-f", bad, "--listen", "127.0.0.1:0")
	if want := bad + ":2: "; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %q", err, want)
	}
}

func TestEveryFlagHasAnEnvVar(t *testing.T) {
	for _, cmd := range newApp().Commands {
		for _, f := range cmd.Flags {
			ev, ok := f.(interface{ GetEnvVars() []string })
			if !ok || len(ev.GetEnvVars()) == 0 || !strings.HasPrefix(ev.GetEnvVars()[0], "LB_") {
				t.Errorf("lb %s --%s has no LB_* environment variable", cmd.Name, f.Names()[0])
			}
		}
	}
}
