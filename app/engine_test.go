package app

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"lb/config"
	"lb/internal/probetarget"
	"lb/l4"
)

// Every name config takes for engine: (and Options.Check for --engine) is one l4 reads as
// that engine: askedEngine's parse never fails on a value that was let through.
func TestEngineNamesAreL4s(t *testing.T) {
	for _, name := range config.Engines {
		e, err := l4.ParseEngine(name)
		if err != nil || e.String() != name {
			t.Errorf("l4.ParseEngine(%q) = %v, %v; want the engine of that name", name, e, err)
		}
	}
}

const enginePool = `engine: %s
listeners:
  - listen: 127.0.0.1:0
    routes: [{pool: a}]
pools:
  a: {servers: [%s]}
`

// The file's engine: wins over --engine, and the listening line says which engine runs. A
// reload that changes engine: applies the rest, keeps the running engine and warns, on every
// reload that asks for another one, that it takes a restart or lb upgrade.
func TestReloadKeepsTheEngine(t *testing.T) {
	addrs, _ := probetarget.Listen(t, 2)
	path := filepath.Join(t.TempDir(), "lb.yaml")
	write(t, path, fmt.Sprintf(enginePool, "epoll", addrs[0]))
	a, logs := startWith(t, Source{ConfigFile: path}, func(o *Options) { o.Engine = "uring" })
	if got := logs.Await(t, "listening", time.Second)["engine"]; got != "epoll" || a.srv.Engine() != l4.EngineEpoll {
		t.Fatalf("engine: epoll in the file, --engine uring: listening with engine=%v, running %v; want epoll (the file wins)", got, a.srv.Engine())
	}
	const warning = "engine: changed, not applied: it takes a restart or lb upgrade; the running engine stays"
	for _, c := range []struct {
		engine, addr string
		warnings     int // so far: one a reload that asks for another engine than the running one
	}{{"uring", addrs[1], 1}, {"auto", addrs[0], 2}, {"epoll", addrs[1], 2}} {
		write(t, path, fmt.Sprintf(enginePool, c.engine, c.addr))
		if err := a.Reload("test"); err != nil {
			t.Fatalf("reload with engine: %s: %v", c.engine, err)
		}
		if a.srv.Engine() != l4.EngineEpoll {
			t.Fatalf("engine: %s reloaded: running %v, want epoll until a restart", c.engine, a.srv.Engine())
		}
		if got := backendAddr(t, a); got != c.addr {
			t.Errorf("engine: %s reloaded: backend %s, want the new file's %s", c.engine, got, c.addr)
		}
		if n := logs.Count(warning); n != c.warnings {
			t.Fatalf("after engine: %s: %d warnings %q, want %d; the log:\n%s", c.engine, n, warning, c.warnings, logs)
		}
	}
	for _, m := range logs.All() {
		if m["message"] == warning && (m["running"] != "epoll" || m["file"] != path) {
			t.Errorf("warning %v: want running=epoll and the file", m)
		}
	}
}

// backendAddr is the address of the one backend of a's first pool.
func backendAddr(t *testing.T, a *App) string {
	t.Helper()
	snap := (*a.pools.Load())[0].ring.Snapshot()
	if len(snap) != 1 {
		t.Fatalf("%d backends, want 1", len(snap))
	}
	return snap[0].Addr
}

// engineRefused turns l4's ErrUringUnavailable into bad input that says where the engine
// was chosen, and leaves other errors alone.
func TestEngineRefusedIsBadInput(t *testing.T) {
	refused := fmt.Errorf("%w (no): run with --engine epoll", l4.ErrUringUnavailable)
	a := &App{o: Options{Source: Source{ConfigFile: "lb.yaml"}}}
	other := errors.New("l4: something else")
	if err := a.engineRefused(&config.Config{}, other); err != other {
		t.Errorf("engineRefused(%v) = %v, want it unchanged", other, err)
	}
	for _, c := range []struct {
		file string
		want string
	}{
		{"", refused.Error()},
		{"uring", "lb.yaml: engine: uring: " + refused.Error() + " (the file's engine: wins over --engine: change it there)"},
	} {
		err := a.engineRefused(&config.Config{Engine: c.file}, refused)
		if !errors.As(err, &InputError{}) || !errors.Is(err, l4.ErrUringUnavailable) || err.Error() != c.want {
			t.Errorf("engine: %q: %v (%T); want an InputError wrapping ErrUringUnavailable: %s", c.file, err, err, c.want)
		}
	}
}
