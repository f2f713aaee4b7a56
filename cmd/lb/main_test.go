package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"lb/app"
	"lb/internal/freeport"
	"lb/serversfile"
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
	return runContext(context.Background(), args...)
}

func runContext(ctx context.Context, args ...string) (string, error) {
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	app.ExitErrHandler = func(*cli.Context, error) {} // return the error instead of exiting
	err := app.RunContext(ctx, append([]string{"lb"}, args...))
	return out.String(), err
}

// runRefused runs the app with args, which must make it stop with bad input before it
// listens on listen. If lb starts listening there instead, the test fails at once (and lb
// is stopped), rather than when some deadline runs out.
func runRefused(t *testing.T, listen string, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := runContext(ctx, args...)
		done <- err
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if c, err := net.Dial("tcp", listen); err == nil {
				c.Close()
				cancel()
				err := <-done
				t.Fatalf("lb %s started listening on %s (then returned %v); want it refused before anything starts", strings.Join(args, " "), listen, err)
			}
		case <-deadline.C:
			cancel()
			err := <-done
			t.Fatalf("lb %s still ran after 10s (then returned %v); want it refused at once", strings.Join(args, " "), err)
		}
	}
}

// parse runs the flags of lb serve through parseOptions only: nothing is loaded or started.
func parse(t *testing.T, args ...string) (app.Options, error) {
	t.Helper()
	cmd := serveCommand()
	var got app.Options
	var perr error
	cmd.Action = func(c *cli.Context) error {
		got, perr = parseOptions(c)
		return nil
	}
	cliApp := &cli.App{Name: "lb", Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard}
	cliApp.ExitErrHandler = func(*cli.Context, error) {}
	if err := cliApp.Run(append([]string{"lb", "serve"}, args...)); err != nil {
		return app.Options{}, err
	}
	return got, perr
}

// validServers writes a servers file that loads: the only bad input of a case is its own.
func validServers(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "servers.txt")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("127.0.0.1:%d id=only\n", freeport.Get(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := serversfile.Load(path); err != nil {
		t.Fatalf("the valid servers file does not load: %v", err)
	}
	return path
}

// Every check of parseOptions (its table and newLogger) stops lb serve with exit status 2
// and a message naming the flag, before it listens; each case is bad only in its own flag,
// with a servers file that loads and a free listen address.
func TestBadInputIsExit2BeforeAnythingStarts(t *testing.T) {
	servers := validServers(t)
	listen := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	base := []string{"serve", "-f", servers, "--listen", listen}
	if _, err := parse(t, base[1:]...); err != nil {
		t.Fatalf("lb %s (no bad flag): %v; every case below must fail only for its own flag", strings.Join(base, " "), err)
	}
	cases := []struct {
		flag, value string
	}{
		{"sniff-timeout", "0s"},
		{"max-header-bytes", "1023"},
		{"max-header-bytes", "1048577"},
		{"connect-timeout", "0s"},
		{"idle-timeout", "-1s"},
		{"resolve-every", "999ms"},
		{"drain-timeout", "-1ms"},
		{"health-interval", "0s"},
		{"health-timeout", "0s"},
		{"rise", "0"},
		{"fall", "0"},
		{"threads", "0"},
		{"engine", "bogus"},
		{"engine", "EPOLL"},
		{"sticky-cookie", "lb srv"},
		{"sticky-cookie-attrs", "Path=/\r\nX-Injected: 1"},
		{"session-cookie", "a b"},
		{"session-store", "mysql://db/0"},
		{"session-store", "sentinel://s:26379/m"},
		{"session-ttl", "0s"},
		{"session-timeout", "0s"},
		{"session-max-entries", "0"},
		{"cluster-name", ""},
		{"cluster-name", "shop:eu"},
		{"log-level", "loud"},
		{"log-level", ""}, // parses as zerolog's NoLevel, which would log nothing
		{"log-format", "xml"},
		{"access-log-format", "text"},
		{"access-log", "/nonexistent-dir/access.log"},
		{"sniff-timeout", "soon"}, // not a duration: urfave/cli's own parse error
		{"rise", "x"},
	}
	for _, tc := range cases {
		args := append(append([]string{}, base...), "--"+tc.flag, tc.value)
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			err := runRefused(t, listen, args...)
			if err == nil || exitCode(err) != exitBadInput {
				t.Fatalf("lb %q: err %v (exit %d), want exit %d", args, err, exitCode(err), exitBadInput)
			}
			if !strings.Contains(err.Error(), "-"+tc.flag) {
				t.Fatalf("lb %q: %q does not name %s", args, err, tc.flag)
			}
		})
	}

	t.Run("unknown flag", func(t *testing.T) {
		args := append(append([]string{}, base...), "--no-such-flag")
		if err := runRefused(t, listen, args...); err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "no-such-flag") {
			t.Fatalf("lb %q: %v (exit %d), want exit %d naming the flag", args, err, exitCode(err), exitBadInput)
		}
	})
	t.Run("servers line", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "servers.txt")
		if err := os.WriteFile(bad, []byte("127.0.0.1:8000\nhttps://example.com:443\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := runRefused(t, listen, "serve", "-f", bad, "--listen", listen)
		if err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), bad+":2: ") {
			t.Fatalf("lb serve with a bad line 2: %v (exit %d), want exit %d naming %s:2:", err, exitCode(err), exitBadInput, bad)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		none := filepath.Join(t.TempDir(), "none.txt")
		for _, args := range [][]string{{"serve", "-f", none, "--listen", listen}, {"probe", "-f", none}} {
			err := runRefused(t, listen, args...)
			if err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), none) {
				t.Fatalf("lb %q: %v (exit %d), want exit %d naming the file", args, err, exitCode(err), exitBadInput)
			}
		}
	})
}

// The edges of every range check are accepted, and the flags land in the fields serve uses.
func TestGoodFlagEdges(t *testing.T) {
	o, err := parse(t, "--max-header-bytes", "1024", "--resolve-every", "1s", "--idle-timeout", "0",
		"--drain-timeout", "0", "--rise", "1", "--fall", "1", "--threads", "1", "--session-max-entries", "1",
		"--sticky-cookie", "lb_srv", "--session-cookie", "PHPSESSID", "--session-store", "rediss://r:6379/0",
		"--log-level", "error", "--log-format", "json")
	if err != nil {
		t.Fatalf("the lowest values each check allows: %v", err)
	}
	d := o.Source.Defaults
	if o.L4.MaxHeaderBytes != 1024 || o.L4.ResolveEvery != time.Second || o.L4.IdleTimeout != 0 || o.DrainTimeout != 0 ||
		d.Health.Rise != 1 || d.Health.Fall != 1 || o.Threads != 1 || o.Sessions.MaxEntries != 1 ||
		d.StickyCookie != "lb_srv" || d.SessionCookie != "PHPSESSID" || o.Sessions.Store != "rediss://r:6379/0" {
		t.Errorf("options do not carry the flags: %+v", o)
	}
	if _, err := parse(t, "--max-header-bytes", "1048576", "--session-cookie", "sid", "--session-store", "redis://r:6379/0"); err != nil {
		t.Errorf("--max-header-bytes 1048576 (the most allowed): %v", err)
	}
	for _, store := range []string{"redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0", "rediss+cluster://n1:6379,n2:6379"} {
		if o, err := parse(t, "--session-cookie", "sid", "--session-store", store); err != nil || o.Sessions.Store != store {
			t.Errorf("--session-store %s: store %q, %v", store, o.Sessions.Store, err)
		}
	}
	if _, err := parse(t, "--port", "65535", "--threads", strconv.Itoa(runtime.NumCPU()), "--listen", "[::1]:0"); err != nil {
		t.Errorf("--port 65535, --threads %d and --listen [::1]:0 (the most allowed): %v", runtime.NumCPU(), err)
	}
	o, err = parse(t, "--port", "8080")
	if err != nil || o.Source.Listen != ":8080" {
		t.Errorf("--port 8080 without --listen: listen %q, %v; want :8080", o.Source.Listen, err)
	}
}

// --engine lands in Options.Engine (auto by default), from the flag or LB_ENGINE; app
// resolves it against the config file's engine:.
func TestEngineFlag(t *testing.T) {
	if o, err := parse(t); err != nil || o.Engine != "auto" {
		t.Errorf("no --engine: Engine %q, %v; want auto", o.Engine, err)
	}
	if o, err := parse(t, "--engine", "epoll"); err != nil || o.Engine != "epoll" {
		t.Errorf("--engine epoll: Engine %q, %v", o.Engine, err)
	}
	t.Setenv("LB_ENGINE", "uring")
	if o, err := parse(t); err != nil || o.Engine != "uring" {
		t.Errorf("LB_ENGINE=uring: Engine %q, %v", o.Engine, err)
	}
	t.Setenv("LB_ENGINE", "bogus")
	if _, err := parse(t); err == nil || exitCode(err) != exitBadInput || err.Error() != "--engine bogus: want auto, epoll or uring" {
		t.Errorf("LB_ENGINE=bogus: %v (exit %d), want exit %d and --engine bogus: want auto, epoll or uring", err, exitCode(err), exitBadInput)
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
