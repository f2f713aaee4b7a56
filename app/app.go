// Package app is lb as a running program. Start loads the configuration (lb.yaml, or the
// flags' servers file as the same config.Config), builds each pool (ring, health prober,
// DNS discovery, the control the admin API changes it through), opens the access log and
// the session store, listens, probes, and starts l4 and the admin listener. Reload applies
// a new configuration whole or not at all, for both forms; Shutdown drains.
//
// cmd/lb turns flags into Options and signals into calls; everything between the two
// lives here, so that a feature meets every other one in one place.
package app

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"lb/accesslog"
	"lb/config"
	"lb/health"
	"lb/l4"
	"lb/metrics"
)

// ErrStopped is returned by Start when its context ended before lb was serving.
var ErrStopped = errors.New("stopped while starting")

// App is a running lb. Its methods are safe for concurrent use.
type App struct {
	o            Options
	log          zerolog.Logger
	metrics      *metrics.Metrics
	srv          *l4.Server
	accessLog    *accesslog.Logger
	lns          []net.Listener
	addrs        []string  // the listeners' bound addresses, in config order
	engine       l4.Engine // asked for at start (the file's engine:, else --engine); a reload keeps it
	failed       chan error
	accepting    atomic.Bool
	upgraded     chan struct{} // closed once a new process took over (Upgrade)
	upgradedOnce sync.Once
	pools        atomic.Pointer[[]*pool] // the pools of the last load or reload: what the admin API and /metrics see

	mu      sync.Mutex // one reload (or shutdown) at a time; guards what follows
	cfg     *config.Config
	store   *sessionStore     // opened once a pool learns sessions
	loaded  [sha256.Size]byte // of the files last read, so that --watch skips other files' events
	watch   *watcher          // with --watch
	undo    []func()          // what Shutdown stops and closes, last started first
	serving sync.WaitGroup    // the listeners' Serve calls
}

// Start runs lb as o says and returns once it accepts connections. It listens before it
// probes, so that a port in use fails at once and clients that come meanwhile wait in the
// kernel's backlog. A mistake in the flags or files is an InputError; if ctx ends first,
// Start undoes what it did and returns ErrStopped.
func Start(ctx context.Context, o Options) (_ *App, err error) {
	a := &App{o: o, log: o.Log, failed: make(chan error, 1), upgraded: make(chan struct{})}
	defer func() {
		if err != nil {
			a.unwind()
		}
	}()
	cfg, err := o.Source.Load()
	if err != nil {
		return nil, InputError{err}
	}
	a.cfg, a.loaded = cfg, filesSum(a.files(cfg))
	if a.engine, err = a.askedEngine(cfg); err != nil {
		return nil, InputError{err}
	}
	a.metrics = metrics.New(metrics.Options{Version: o.Version})
	var pools []*pool
	for _, pc := range cfg.Pools {
		p, err := a.newPool(pc, len(cfg.Pools) > 1)
		if err != nil {
			return nil, err
		}
		pools = append(pools, p)
	}
	if a.accessLog, err = accesslog.Open(o.AccessLog); err != nil {
		return nil, InputError{fmt.Errorf("--access-log %s: %w: want off, stdout, stderr or a file lb can write", o.AccessLog.Dest, err)}
	}
	a.later(func() {
		if err := a.accessLog.Close(); err != nil {
			a.log.Error().Err(err).Msg("access log")
		}
	})
	a.later(o.Upgrade.stop)
	// The admin and metrics listeners first: an address of theirs that is bad input stops
	// lb before any client can connect to it.
	adminLn, err := listenAdmin(o.Admin, a.via)
	if err != nil {
		return nil, err
	}
	if adminLn != nil {
		a.later(func() { adminLn.Close() })
	}
	for _, l := range cfg.Listeners {
		ln, err := a.via(l.Name)("tcp", l.Listen, net.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w (is another process using it? change --listen or the config's listen)", l.Listen, err)
		}
		a.later(func() { ln.Close() })
		a.lns, a.addrs = append(a.lns, ln), append(a.addrs, ln.Addr().String())
	}
	handover, err := o.Upgrade.takeHandover() // before ready, which closes what is not taken
	if err != nil {
		return nil, err
	}
	if handover != nil {
		a.later(func() { handover.Close() })
	}
	o.Activated.closeRest(a.log)
	for _, p := range pools {
		p.init(ctx)
	}
	if ctx.Err() != nil {
		return nil, ErrStopped
	}
	if a.store, err = a.openStore(ctx, cfg); err != nil {
		return nil, err
	}
	l4cfg := o.L4
	for _, p := range pools {
		l4cfg.Pools = append(l4cfg.Pools, p.l4Pool(a.store))
	}
	l4cfg.ReservedFDs = reserved(pools, o, len(a.lns))
	l4cfg.Log, l4cfg.AccessLog, l4cfg.Resolver, l4cfg.Engine = a.log, a.accessLog, o.Resolver, a.engine
	// The probes above had every CPU; from here, l4 runs one event loop per GOMAXPROCS.
	runtime.GOMAXPROCS(o.Threads)
	if a.srv, err = l4.New(l4cfg); err != nil {
		return nil, a.engineRefused(cfg, err)
	}
	a.pools.Store(&pools)
	a.metrics.SetSource(a)
	for _, p := range pools {
		p.run()
	}
	a.later(func() {
		for _, p := range *a.pools.Load() {
			p.stop()
		}
	})
	for i, ln := range a.lns {
		l := cfg.Listeners[i]
		a.serving.Go(func() {
			if err := a.srv.ServeRoutes(ln, l4.Routes{Table: l.Table, NoMatchStatus: l.NoMatchStatus}); err != nil && !errors.Is(err, l4.ErrServerClosed) {
				select {
				case a.failed <- fmt.Errorf("serving %s: %w", ln.Addr(), err):
				default:
				}
			}
		})
	}
	// Serve takes its listener on a goroutine of its own: wait for every one, so that the lb
	// this one replaces stops accepting only once this one does, and adopted connections
	// find their listener. (One that fails reports it on Failed: wait a second at most.)
	for i := 0; a.srv.Listening() < len(a.lns) && i < 1000; i++ {
		time.Sleep(time.Millisecond)
	}
	a.accepting.Store(true)
	if o.PIDFile != "" {
		if err := writePIDFile(o.PIDFile); err != nil {
			return nil, InputError{err}
		}
		a.later(func() { removePIDFile(o.PIDFile) })
	}
	if err := o.Upgrade.ready(); err != nil {
		return nil, err
	}
	if handover != nil {
		a.later(a.adopt(handover))
	}
	if adminLn != nil {
		a.later(a.serveAdmin(adminLn))
	}
	if o.Watch {
		if a.watch, err = watchFiles(a.files(cfg), a.log, func() { a.Reload("watch") }); err != nil {
			a.log.Error().Err(err).Msg("--watch is off: SIGHUP still reloads")
		} else {
			a.later(a.watch.stop)
		}
	}
	for i, p := range pools {
		a.logStart(p, i == 0 && len(pools) > 1)
	}
	if a.watch != nil {
		// A file changed between the load above and the watch being in place has no event
		// to report it: look once now (a file unchanged costs a read and a hash). Reload logs
		// its outcome.
		_ = a.Reload("watch")
	}
	return a, nil
}

// askedEngine is the engine cfg asks for: its engine:, else --engine, else auto.
func (a *App) askedEngine(cfg *config.Config) (l4.Engine, error) {
	return l4.ParseEngine(cmp.Or(cfg.Engine, a.o.Engine, "auto"))
}

// engineRefused makes l4.New's ErrUringUnavailable bad input, for the operator to choose
// another engine where it was chosen: when that was the file, l4's advice of --engine
// alone would not help. Other errors are returned as they are.
func (a *App) engineRefused(cfg *config.Config, err error) error {
	switch {
	case !errors.Is(err, l4.ErrUringUnavailable):
		return err
	case cfg.Engine != "":
		return InputError{fmt.Errorf("%s: engine: %s: %w (the file's engine: wins over --engine: change it there)", a.o.Source.File(), cfg.Engine, err)}
	}
	return InputError{err}
}

// later has Shutdown (or a failed Start) call undo, before what was started earlier.
func (a *App) later(undo func()) { a.undo = append(a.undo, undo) }

// unwind undoes what Start did, last first.
func (a *App) unwind() {
	for i := len(a.undo) - 1; i >= 0; i-- {
		a.undo[i]()
	}
	a.undo = nil
}

// openStore opens the store of learned sessions if a pool of cfg learns them and none is
// open; otherwise it returns the one open (or nil).
func (a *App) openStore(ctx context.Context, cfg *config.Config) (*sessionStore, error) {
	if a.store != nil {
		return a.store, nil
	}
	for _, p := range cfg.Pools {
		if p.SessionCookie != "" {
			s, err := openSessions(ctx, a.o.Sessions, a.o.Resolver, a.log)
			if err != nil {
				return nil, err
			}
			a.later(s.close)
			return s, nil
		}
	}
	return nil, nil
}

// Addrs returns the addresses lb listens on, in the configuration's order.
func (a *App) Addrs() []string { return a.addrs }

// Failed delivers the error of a listener that stopped serving on its own.
func (a *App) Failed() <-chan error { return a.failed }

// Shutdown stops accepting, lets open connections finish until ctx ends (then closes
// them), and stops everything Start started. /readyz answers 503 from its first moment.
func (a *App) Shutdown(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.accepting.Store(false)
	// tableflip holds a copy of each listening socket for the next upgrade: closed now, the
	// kernel refuses new clients once l4 has closed its own, rather than queue them unserved.
	a.o.Upgrade.stop()
	a.log.Info().Int64("open", a.srv.Stats().Active).Msg("shutting down: draining connections")
	if err := a.srv.Shutdown(ctx); err != nil {
		a.log.Warn().Msg("drain timeout: closed the connections still open")
	}
	a.serving.Wait()
	a.unwind()
	a.log.Info().Msg("stopped")
}

// ReopenLogs reopens the access log file (after logrotate moved it) and logs lb's counters.
func (a *App) ReopenLogs() {
	a.logCounters()
	if err := a.accessLog.Reopen(); err != nil {
		a.log.Error().Err(err).Str("path", a.o.AccessLog.Dest).Msg("cannot reopen the access log: writing on to the old file")
	}
}

// Collect is what /metrics reports: l4's counters, and when each backend last changed
// state, which its pool's prober knows.
func (a *App) Collect(snap *metrics.Snapshot) {
	a.srv.Collect(snap)
	probers := map[string]*health.Prober{}
	for _, p := range *a.pools.Load() {
		probers[p.cfg.Name] = p.prober
	}
	for i := range snap.Backends {
		b := &snap.Backends[i]
		if p := probers[b.Pool]; p != nil {
			b.LastChange, _ = p.LastChange(b.ID)
		}
	}
}

// files are what a reload of cfg reads: the config or servers file, and the servers files
// a config file names.
func (a *App) files(cfg *config.Config) []string {
	var out []string
	if f := a.o.Source.File(); f != "" {
		out = append(out, f)
	}
	for _, p := range cfg.Pools {
		if p.ServersFrom != "" && !slices.Contains(out, p.ServersFrom) {
			out = append(out, p.ServersFrom)
		}
	}
	return out
}

// filesSum is the hash of the files' contents; a file that cannot be read counts as empty.
func filesSum(paths []string) [sha256.Size]byte {
	h := sha256.New()
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		fmt.Fprintf(h, "%s %d\n", p, len(data))
		h.Write(data)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// logCounters answers SIGUSR1 with one line of lb's counters: what an operator (or the soak)
// reads to see connections, memory and goroutines come and go.
func (a *App) logCounters() {
	st := a.srv.Stats()
	var snap metrics.Snapshot
	a.srv.Collect(&snap)
	e := a.log.Info().
		Uint64("accepted", snap.Accepted).
		Int64("active", st.Active).
		Int64("max_conns", st.MaxConns).
		Int64("pipes_in_use", st.PipesInUse).
		Int64("head_bytes", st.HeadBytes).
		Uint64("heads_unparsed", st.HeadsUnparsed).
		Uint64("idle_timeouts", st.IdleTimeouts)
	for r := metrics.RefuseReason(0); r < metrics.NumRefuseReasons; r++ {
		e = e.Uint64("refused_"+r.String(), snap.Refused[r])
	}
	e.Int("goroutines", runtime.NumGoroutine()).Msg("counters")
}

// Sticky says how a pool keeps clients on their backend, for logs and lb probe.
func Sticky(p config.Pool, so Sessions) string {
	var modes []string
	if p.StickyCookie != "" {
		modes = append(modes, "cookie "+p.StickyCookie+" (inserted)")
	}
	if p.SessionCookie != "" {
		modes = append(modes, "session "+p.SessionCookie+" (learned, "+so.Where()+")")
	}
	if len(modes) == 0 {
		return "off"
	}
	return strings.Join(modes, ", ")
}

// logStart says lb is listening, with the pool's backends (every one of a short list, the
// first few and the counts of a long one) and the connection limit.
func (a *App) logStart(p *pool, named bool) {
	arr := zerolog.Arr()
	snap := p.ring.Snapshot()
	up := 0
	for i, s := range snap {
		if i < startLines {
			arr.Str(s.ID + "=" + s.Addr)
		}
		if s.Up {
			up++
		}
	}
	e := a.log.Info().Str("listen", strings.Join(a.addrs, ",")).Array("backends", arr)
	if named || p.cfg.Name != "default" {
		e = e.Str("pool", p.cfg.Name)
	}
	if len(snap) > startLines {
		e = e.Int("more_backends", len(snap)-startLines)
	}
	if rc := p.ring.Config(); rc.Balance.String() != "roundrobin" || rc.SlowStart > 0 {
		e = e.Str("balance", rc.Balance.String()).Dur("slow_start", rc.SlowStart)
	}
	e.Int("up", up).Int("down", len(snap)-up).Str("sticky", Sticky(p.cfg, a.o.Sessions)).Int64("max_conns", a.srv.Stats().MaxConns).
		Str("engine", a.srv.Engine().String()).Msg("listening")
}

// startLines is how many backends the "listening" line names.
const startLines = 16
