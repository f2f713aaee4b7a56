package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"lb/accesslog"
	"lb/admin"
	"lb/config"
	"lb/control"
	"lb/discover"
	"lb/health"
	"lb/l4"
	"lb/metrics"
	"lb/ring"
	"lb/serversfile"
)

// withEnv gives every flag an LB_<NAME> environment variable.
func withEnv(flags ...cli.Flag) []cli.Flag {
	for _, f := range flags {
		env := []string{"LB_" + strings.ToUpper(strings.ReplaceAll(f.Names()[0], "-", "_"))}
		switch f := f.(type) {
		case *cli.StringFlag:
			f.EnvVars = env
		case *cli.IntFlag:
			f.EnvVars = env
		case *cli.DurationFlag:
			f.EnvVars = env
		case *cli.Float64Flag:
			f.EnvVars = env
		case *cli.BoolFlag:
			f.EnvVars = env
		}
	}
	return flags
}

var (
	stickyCookieFlag  = &cli.StringFlag{Name: "sticky-cookie", Usage: "`NAME` of lb's sticky cookie: a request carrying NAME=<backend id> goes to that backend while it is up; others get NAME inserted into their first response"}
	clusterFlag       = &cli.StringFlag{Name: "cluster-name", Value: "default", Usage: "namespace of the sessions in Redis: replicas with the same name share them"}
	sessionCookieFlag = &cli.StringFlag{Name: "session-cookie", Usage: "`NAME` of the application's session cookie (e.g. PHPSESSID) to learn from the backends' first responses: later requests carrying it go to the same backend while it is up"}
	sessionStoreFlag  = &cli.StringFlag{Name: "session-store", Value: "memory", Usage: "where learned sessions live: memory (this process) or redis://[user:password@]host:port/db (shared by every replica of --cluster-name)"}
	serversFlag       = &cli.StringFlag{Name: "servers", Aliases: []string{"f"}, Value: "servers.txt", Usage: "`FILE` of backends, one per line: host:port or http://host:port, optional weight=N id=NAME"}
	listenFlag        = &cli.StringFlag{Name: "listen", Usage: "`ADDR` to listen on, e.g. 127.0.0.1:7777 or [::1]:7777 (overrides --port)"}
	portFlag          = &cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 7777, Usage: "`PORT` to listen on, all interfaces"}
	watchFlag         = &cli.BoolFlag{Name: "watch", Usage: "reload the servers file when it changes (SIGHUP reloads it too)"}

	// Health checks, shared by serve and probe.
	healthHTTPFlag   = &cli.StringFlag{Name: "health-http", Usage: "`PATH` to check with an HTTP/1.1 GET instead of a TCP connect, e.g. /health (a servers-file check= wins)"}
	expectStatusFlag = &cli.StringFlag{Name: "health-expect-status", Value: "200-399", Usage: "HTTP statuses an HTTP check counts as up: a `RANGE` such as 200-399, or one status"}
)

// balanceFlags choose how the ring balances.
func balanceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "balance", Value: "roundrobin", Usage: "how to choose a backend for a new connection: " + ring.BalanceNames},
		&cli.DurationFlag{Name: "slow-start", Usage: "ramp the weight of a backend that comes up or is added from 10% to full over this `DURATION` (0: off)"},
		healthHTTPFlag, expectStatusFlag,
	}
}

// parseBalance reads balanceFlags and the health-check flags into o.
func parseBalance(c *cli.Context, o *options) error {
	bal, err := ring.ParseBalance(c.String("balance"))
	if err != nil {
		return badInput{fmt.Errorf("--balance %s: want %s", c.String("balance"), ring.BalanceNames)}
	}
	o.ring = ring.Config{Balance: bal, SlowStart: c.Duration("slow-start")}
	if o.ring.SlowStart < 0 {
		return badInput{fmt.Errorf("--slow-start %s: want 0 (off) or a duration, e.g. 30s", o.ring.SlowStart)}
	}
	return parseHealthHTTP(c, &o.health)
}

// parseHealthHTTP reads --health-http and --health-expect-status into cfg.
func parseHealthHTTP(c *cli.Context, cfg *health.Config) error {
	cfg.HTTPPath = c.String("health-http")
	if cfg.HTTPPath != "" && !serversfile.ValidPath(cfg.HTTPPath) {
		return badInput{fmt.Errorf("--health-http %q: want a path starting with /, without spaces, e.g. /health", cfg.HTTPPath)}
	}
	expect, err := health.ParseStatusRange(c.String("health-expect-status"))
	if err != nil {
		return badInput{fmt.Errorf("--health-expect-status %s: want a status or a range from 100 to 599, e.g. 200-399 or 200", c.String("health-expect-status"))}
	}
	cfg.Expect = expect
	return nil
}

func routingFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "sniff-timeout", Value: 3 * time.Second, Usage: "wait this long for a request head; then route on what came (or nothing)"},
		&cli.StringFlag{Name: "sniff-timeout-action", Value: "route", Usage: "what to do with a connection whose first bytes are not decided within --sniff-timeout: route (with what came) or close (a slowloris shield for HTTP-only listeners)"},
		&cli.IntFlag{Name: "max-header-bytes", Value: 16 << 10, Usage: "request head bytes to peek at most; a larger head is routed unparsed"},
		&cli.DurationFlag{Name: "connect-timeout", Value: 2 * time.Second, Usage: "backend dial timeout; on failure the next backend is tried"},
		&cli.DurationFlag{Name: "idle-timeout", Value: 5 * time.Minute, Usage: "close a connection with no traffic either way for this long (0: never)"},
		&cli.DurationFlag{Name: "resolve-every", Value: 30 * time.Second, Usage: "look backend host names up again this often, off the data path; a name that fails keeps its last address"},
		&cli.DurationFlag{Name: "drain-timeout", Value: 10 * time.Second, Usage: "on SIGINT/SIGTERM, let open connections finish this long, then close them"},
		&cli.DurationFlag{Name: "health-interval", Value: 2 * time.Second, Usage: "time between TCP health probes of each backend"},
		&cli.DurationFlag{Name: "health-timeout", Value: time.Second, Usage: "TCP health probe dial timeout"},
		&cli.IntFlag{Name: "rise", Value: 2, Usage: "consecutive good probes that bring a down backend up"},
		&cli.IntFlag{Name: "fall", Value: 3, Usage: "consecutive failed probes (or dials) that take an up backend down"},
		&cli.IntFlag{Name: "max-sniff-memory", Usage: "`MIB` of buffers all connections together may hold for request heads (and sticky response heads); past it a head goes on unparsed (0: 4 KiB a connection of --max-conns, 16 to 256 MiB)"},
		&cli.IntFlag{Name: "max-conns", Usage: "connections lb holds at most; past it new clients wait in the listen backlog (0: derived from the open-files limit, two descriptors a connection)"},
		sendProxyFlag, acceptProxyFlag, perIPMaxConnsFlag, perIPRateFlag, perIPBurstFlag, perIPv6PrefixFlag, queueTimeoutFlag, // clients.go
		&cli.IntFlag{Name: "threads", Value: defaultThreads(), Usage: "event loops (and Go's GOMAXPROCS); the default, half the CPUs, leaves the rest to the kernel's network work and to co-located processes"},
		stickyCookieFlag,
		&cli.StringFlag{Name: "sticky-cookie-attrs", Value: "Path=/; HttpOnly; SameSite=Lax", Usage: "attributes of the inserted sticky cookie"},
		sessionCookieFlag, sessionStoreFlag,
		&cli.DurationFlag{Name: "session-ttl", Value: 30 * time.Minute, Usage: "a learned session is forgotten after this long without a request (sliding)"},
		&cli.StringFlag{Name: "session-secret", Usage: "`SECRET` for the keyed hash under which sessions are stored (never raw); the same on every replica; default: generated, and kept in Redis for the cluster with a redis store"},
		&cli.DurationFlag{Name: "session-timeout", Value: 50 * time.Millisecond, Usage: "bound on every session store call; past it the ring decides"},
		&cli.IntFlag{Name: "session-max-entries", Value: 100_000, Usage: "sessions the memory store holds at most (least recently used go first)"},
		clusterFlag,
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error (debug: one line per connection)"},
		&cli.StringFlag{Name: "log-format", Value: "console", Usage: "console or json"},
		// The access log: one line per closed connection.
		&cli.StringFlag{Name: "access-log", Value: "off", Usage: "one line per closed connection to `DEST`: off, stdout, stderr or a file (reopened on SIGUSR1, for logrotate)"},
		&cli.StringFlag{Name: "access-log-format", Value: "json", Usage: "json or console"},
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:         "serve",
		Usage:        "balance TCP connections over the backends of a servers file",
		Flags:        withEnv(append(append(append([]cli.Flag{configFlag, serversFlag, listenFlag, portFlag, watchFlag, resolverFlag}, routingFlags()...), balanceFlags()...), adminFlags()...)...),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			opts, err := parseOptions(c)
			if err != nil {
				return err
			}
			if err := useResolver(c.String("resolver")); err != nil {
				return err
			}
			if c.String("config") != "" {
				cfg, err := loadConfig(c, opts)
				if err != nil {
					return err
				}
				return serve(c.Context, opts, cfg)
			}
			backends, sources, err := loadServerFile(c.String("servers"))
			if err != nil {
				return err
			}
			opts.servers, opts.watch = c.String("servers"), c.Bool("watch")
			opts.discover = sources
			return serve(c.Context, opts, config.FromFlags(opts.listen, backends, poolDefaults(opts)))
		},
	}
}

// loadServers reads the servers file; every failure, a missing file too, is bad input.
func loadServers(path string) ([]ring.Backend, error) {
	backends, err := serversfile.Load(path)
	if err != nil {
		return nil, badInput{err}
	}
	return backends, nil
}

// isToken reports whether s is empty (off) or an RFC 7230 token, as cookie names must be.
func isToken(s string) bool {
	for _, r := range s {
		if r > '~' || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}

// defaultThreads is half the CPUs, at least one. The kernel does most of an L4 proxy's
// work (TCP, softirqs) on the same CPUs; on 2 CPUs shared with wrk and nginx, one loop
// beat two: less scheduler traffic between Go's threads, and a shorter latency tail.
func defaultThreads() int { return max(1, runtime.NumCPU()/2) }

// options is what serve needs from the flags.
type options struct {
	threads      int
	onListen     func(addr string) // called once lb accepts connections
	listen       string
	drainTimeout time.Duration
	sessions     sessionOptions
	discover     []discover.Source // the servers file's discover= lines
	health       health.Config
	ring         ring.Config
	l4           l4.Config // without Pools, which serve makes from the config
	log          zerolog.Logger
	accessLog    accesslog.Config // opened by serve, before it listens

	// clients: PROXY protocol and per-address limits (clients.go).
	clients clientOptions
	admin   adminOptions
	servers string // the servers file, reloaded on SIGHUP; "": none (lb demo)
	watch   bool   // reload the servers file when it changes
}

func parseOptions(c *cli.Context) (options, error) {
	o := options{
		threads:      c.Int("threads"),
		listen:       c.String("listen"),
		drainTimeout: c.Duration("drain-timeout"),
		health: health.Config{
			Interval: c.Duration("health-interval"),
			Timeout:  c.Duration("health-timeout"),
			Rise:     c.Int("rise"),
			Fall:     c.Int("fall"),
		},
		l4: l4.Config{
			SniffTimeout:   c.Duration("sniff-timeout"),
			CloseSlowHeads: c.String("sniff-timeout-action") == "close",
			MaxHeaderBytes: c.Int("max-header-bytes"),
			ConnectTimeout: c.Duration("connect-timeout"),
			IdleTimeout:    c.Duration("idle-timeout"),
			MaxConns:       c.Int("max-conns"),
			MaxHeadMemory:  int64(c.Int("max-sniff-memory")) << 20,
			ResolveEvery:   c.Duration("resolve-every"),
			Sticky: l4.Sticky{
				Cookie:      c.String("sticky-cookie"),
				CookieAttrs: c.String("sticky-cookie-attrs"),
			},
		},
	}
	o.sessions = sessionOptions{
		cookie:     c.String("session-cookie"),
		store:      c.String("session-store"),
		ttl:        c.Duration("session-ttl"),
		secret:     c.String("session-secret"),
		timeout:    c.Duration("session-timeout"),
		maxEntries: c.Int("session-max-entries"),
		cluster:    c.String("cluster-name"),
	}
	port := c.Int("port")
	if o.listen == "" {
		o.listen = ":" + strconv.Itoa(port)
	}
	checks := []struct {
		bad  bool
		flag string
		want string
	}{ // the message shows the value given, but for --session-store, which may hold a password
		{o.l4.SniffTimeout <= 0, "sniff-timeout", "a duration above 0, e.g. 3s"},
		{c.String("sniff-timeout-action") != "route" && c.String("sniff-timeout-action") != "close", "sniff-timeout-action", "route or close"},
		{o.l4.MaxHeaderBytes < 1024 || o.l4.MaxHeaderBytes > 1<<20, "max-header-bytes", "1024 to 1048576"},
		{o.l4.ConnectTimeout <= 0, "connect-timeout", "a duration above 0, e.g. 2s"},
		{o.l4.IdleTimeout < 0, "idle-timeout", "0 (never) or a duration, e.g. 5m"},
		{o.l4.ResolveEvery < time.Second, "resolve-every", "a duration of 1s or more, e.g. 30s"},
		{o.drainTimeout < 0, "drain-timeout", "a duration of 0 or more, e.g. 10s"},
		{o.health.Interval <= 0, "health-interval", "a duration above 0, e.g. 2s"},
		{o.health.Timeout <= 0, "health-timeout", "a duration above 0, e.g. 1s"},
		{o.health.Rise < 1, "rise", "1 or more"},
		{o.health.Fall < 1, "fall", "1 or more"},
		{port < 0 || port > 65535, "port", "a port from 1 to 65535 (0: any free port)"},
		{!validListen(o.listen), "listen", "host:port with a port from 0 to 65535, e.g. 127.0.0.1:7777, [::1]:7777 or :7777"},
		{o.l4.MaxConns < 0, "max-conns", "0 (derived from the open-files limit) or more"},
		{o.l4.MaxHeadMemory < 0 || o.l4.MaxHeadMemory > 1<<40, "max-sniff-memory", "0 (derived) or a size in MiB, e.g. 64"},
		{o.threads < 1 || o.threads > runtime.NumCPU(), "threads", fmt.Sprintf("1 to %d, the CPUs lb may use", runtime.NumCPU())},
		{!isToken(o.l4.Sticky.Cookie), "sticky-cookie", "a cookie name: letters, digits and !#$%&'*+-.^_`|~"},
		{strings.ContainsAny(o.l4.Sticky.CookieAttrs, "\r\n"), "sticky-cookie-attrs", "one line, e.g. Path=/; HttpOnly; SameSite=Lax"},
		{!isToken(o.sessions.cookie), "session-cookie", "a cookie name: letters, digits and !#$%&'*+-.^_`|~"},
		{o.sessions.store != "memory" && !strings.HasPrefix(o.sessions.store, "redis://") && !strings.HasPrefix(o.sessions.store, "rediss://"), "session-store", "memory or redis://host:port/db"},
		{o.sessions.ttl <= 0, "session-ttl", "a duration above 0, e.g. 30m"},
		{o.sessions.timeout <= 0, "session-timeout", "a duration above 0, e.g. 50ms"},
		{o.sessions.maxEntries < 1, "session-max-entries", "1 or more"},
		{o.sessions.cluster == "" || strings.ContainsAny(o.sessions.cluster, " :\r\n"), "cluster-name", "a name without spaces or colons, e.g. shop-eu"},
		{c.String("access-log-format") != "json" && c.String("access-log-format") != "console", "access-log-format", "json or console"},
		{c.IsSet("session-store") && o.sessions.cookie == "", "session-store", "--session-cookie NAME beside it: the store keeps learned sessions, and without the cookie there are none"},
	}
	for _, ch := range checks {
		if ch.bad {
			given := fmt.Sprint(" ", c.Value(ch.flag))
			if ch.flag == "session-store" {
				given = ""
			}
			return o, badInput{fmt.Errorf("--%s%s: want %s", ch.flag, given, ch.want)}
		}
	}
	clients, err := parseClientOptions(c)
	if err != nil {
		return o, err
	}
	o.clients = clients
	if err := parseBalance(c, &o); err != nil {
		return o, err
	}
	log, err := newLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return o, err
	}
	o.log = log
	o.accessLog = accesslog.Config{Dest: c.String("access-log"), Format: c.String("access-log-format"), Log: log}
	o.admin, err = parseAdminOptions(c)
	return o, err
}

// validListen reports whether addr is host:port with a numeric port that can be listened on;
// the host may be empty (every interface), an IP address or a name.
func validListen(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || strings.ContainsAny(host, " /") {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return err == nil && p <= 65535
}

func newLogger(level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || lvl == zerolog.NoLevel {
		return zerolog.Nop(), badInput{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	var log zerolog.Logger
	switch format {
	case "json":
		log = zerolog.New(os.Stderr)
	case "console":
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	default:
		return zerolog.Nop(), badInput{fmt.Errorf("--log-format %q: want console or json", format)}
	}
	return log.Level(lvl).With().Timestamp().Logger(), nil
}

// serve runs lb until SIGINT or SIGTERM, then drains: it stops accepting, lets open
// connections finish for up to the drain timeout, and returns nil. cfg is the config file's,
// or the one listener and pool of the flags (config.FromFlags).
func serve(parent context.Context, o options, cfg *config.Config) error {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Before lb says it listens: a SIGUSR1 or SIGHUP sent at once must not kill it.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	m := metrics.New(metrics.Options{Version: buildVersion()})
	traffic := &lazySource{} // the admin API's traffic per backend, once l4 runs
	pools, err := newPools(cfg, o, m, trafficOf(traffic))
	if err != nil {
		return err
	}
	accessLog, err := accesslog.Open(o.accessLog)
	if err != nil {
		return badInput{fmt.Errorf("--access-log %s: %w: want off, stdout, stderr or a file lb can write", o.accessLog.Dest, err)}
	}
	defer func() {
		if err := accessLog.Close(); err != nil {
			o.log.Error().Err(err).Msg("access log")
		}
	}()
	// Listen before probing: a port in use fails at once, and clients that come while the
	// backends are probed wait in the kernel's backlog.
	var lns []net.Listener
	for _, l := range cfg.Listeners {
		ln, err := net.Listen("tcp", l.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w (is another process using it? change --listen or the config's listen)", l.Listen, err)
		}
		defer ln.Close()
		lns = append(lns, ln)
	}
	adminLn, err := listenAdmin(o.admin)
	if err != nil {
		return err
	}
	if adminLn != nil {
		defer adminLn.Close()
	}
	stopDiscovery := startDiscovery(ctx, pools[0].ring, o)
	defer stopDiscovery()
	for _, p := range pools {
		p.prober.Init(ctx)
	}
	if ctx.Err() != nil {
		o.log.Info().Msg("stopped while starting")
		return nil
	}

	l4cfg := o.l4
	so := o.sessions
	for _, p := range cfg.Pools {
		if so.cookie == "" {
			so.cookie = p.SessionCookie // the store serves every pool that learns sessions
		}
	}
	store, err := openSessions(ctx, so, o.log)
	if err != nil {
		return err
	}
	if store != nil {
		defer store.Close()
	}
	for _, p := range pools {
		l4cfg.Pools = append(l4cfg.Pools, p.l4Pool(store))
	}
	// What lb opens besides connections: probes, its listeners, logs and DNS lookups, and the
	// Redis pool (go-redis: 10 connections a thread).
	l4cfg.ReservedFDs = health.MaxProbes*len(pools) + 32
	if store != nil {
		l4cfg.ReservedFDs += 10 * o.threads
	}
	l4cfg.Log, l4cfg.AccessLog = o.log, accessLog
	l4cfg.AcceptProxy, l4cfg.PerIP, l4cfg.QueueTimeout = o.clients.acceptProxy, o.clients.admit, o.clients.queueTimeout
	// The probes above had every CPU; from here, l4 runs one event loop per GOMAXPROCS.
	runtime.GOMAXPROCS(o.threads)
	srv, err := l4.New(l4cfg)
	if err != nil {
		return err
	}
	backends := &poolBackends{} // the pools the admin API and /metrics see: reloads swap them
	backends.pools.Store(&pools)
	m.SetSource(source{srv, backends})

	for _, p := range pools {
		p.probe()
	}
	defer func() {
		for _, p := range pools {
			p.stop()
		}
	}()

	serveErr := make(chan error, len(lns))
	var addrs []string
	for i, ln := range lns {
		routes := l4.Routes{Table: cfg.Listeners[i].Table, NoMatchStatus: cfg.Listeners[i].NoMatchStatus}
		if cfg.File == "" {
			routes = l4.Routes{} // the flags' one catch-all route: no matching at all
		}
		go func() { serveErr <- srv.ServeRoutes(ln, routes) }()
		addrs = append(addrs, ln.Addr().String())
	}
	traffic.Store(srv)
	ctl := pools[0].ctl // with the flags, SIGHUP and --watch reload its servers file
	var accepting atomic.Bool
	accepting.Store(true)
	if adminLn != nil {
		stopAdmin := serveAdmin(adminLn, admin.New(admin.Config{
			Backends:  backends,
			Token:     o.admin.token,
			Stats:     statsOf(srv, addrs),
			Metrics:   m.Handler(),
			Accepting: accepting.Load,
			Version:   buildVersion(),
			Log:       o.log,
		}), o.log)
		defer stopAdmin()
	}
	reloads := make(chan string, 1) // from --watch, for the config file: reloaded here, with SIGHUP's
	if o.watch {
		watchCtx, stopWatch := context.WithCancel(context.Background())
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			err := error(nil)
			if cfg.File != "" {
				err = control.WatchFile(watchCtx, cfg.File, o.log, func(context.Context) {
					select {
					case reloads <- "watch":
					default: // one is pending already
					}
				})
			} else {
				err = ctl.Watch(watchCtx)
			}
			if err != nil {
				o.log.Error().Err(err).Msg("--watch is off: SIGHUP still reloads")
			}
		}()
		defer func() { stopWatch(); <-watchDone }()
	}
	loaded := fileSum(cfg.File)
	reloadConfig := func(why string) {
		if sum := fileSum(cfg.File); why == "watch" && sum == loaded {
			return // another file of the directory changed
		}
		next, err := reload(ctx, o, m, srv, store, cfg, pools, addrs)
		loaded = fileSum(cfg.File)
		if err != nil {
			o.log.Error().Err(err).Str("why", why).Msg("config not reloaded: nothing changed")
			return
		}
		cfg, pools = next.cfg, next.pools
		backends.pools.Store(&pools)
		o.log.Info().Str("why", why).Int("pools", len(pools)).Msg("config reloaded")
	}
	for i, p := range pools {
		logStart(o.log, strings.Join(addrs, ","), p, stickyMode(p.cfg.StickyCookie, so), srv.Stats().MaxConns, i == 0 && len(pools) > 1)
	}
	if o.onListen != nil {
		o.onListen(addrs[0])
	}

wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-usr1:
			logCounters(o.log, srv.Stats())
			if err := accessLog.Reopen(); err != nil {
				o.log.Error().Err(err).Str("path", o.accessLog.Dest).Msg("cannot reopen the access log: writing on to the old file")
			}
		case <-hup:
			switch {
			case cfg.File != "":
				reloadConfig("SIGHUP")
			case o.servers != "":
				ctl.ReloadAndLog(ctx, "SIGHUP")
			default:
				o.log.Warn().Msg("SIGHUP: no servers file to reload")
			}
		case why := <-reloads:
			reloadConfig(why)
		case err := <-serveErr:
			srv.Shutdown(context.Background())
			return fmt.Errorf("serving %s: %w", strings.Join(addrs, ","), err)
		}
	}
	stop() // a second signal ends lb at once
	accepting.Store(false)
	o.log.Info().Dur("drain_timeout", o.drainTimeout).Int64("open", srv.Stats().Active).Msg("shutting down: draining connections")
	drainCtx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		o.log.Warn().Msg("drain timeout: closed the connections still open")
	}
	for range lns {
		<-serveErr
	}
	o.log.Info().Msg("stopped")
	return nil
}

// logCounters answers SIGUSR1 with one line of lb's counters: what an operator (or the soak)
// reads to see connections, memory and goroutines come and go.
func logCounters(log zerolog.Logger, st l4.Stats) {
	log.Info().
		Uint64("accepted", st.Accepted).
		Int64("active", st.Active).
		Int64("max_conns", st.MaxConns).
		Int64("pipes_in_use", st.PipesInUse).
		Int64("head_bytes", st.HeadBytes).
		Uint64("heads_unparsed", st.HeadsUnparsed).
		Uint64("refused_none_up", st.RefusedNoneUp).
		Uint64("refused_dial", st.RefusedDial).
		Uint64("refused_busy", st.RefusedBusy).
		Uint64("closed_slow", st.ClosedSlow).
		Uint64("idle_timeouts", st.IdleTimeouts).
		Int("goroutines", runtime.NumGoroutine()).
		Msg("counters")
}

// stickyMode says how clients are kept on their backend, for logs and lb probe.
func stickyMode(cookie string, so sessionOptions) string {
	var modes []string
	if cookie != "" {
		modes = append(modes, "cookie "+cookie+" (inserted)")
	}
	if so.cookie != "" {
		modes = append(modes, "session "+so.cookie+" (learned, "+so.where()+")")
	}
	if len(modes) == 0 {
		return "off"
	}
	return strings.Join(modes, ", ")
}

// logStart says lb is listening, with the backends (every one of a short list, the first
// few and the counts of a long one) and the connection limit.
func logStart(log zerolog.Logger, addr string, p *pool, sticky string, maxConns int64, named bool) {
	r := p.ring
	arr := zerolog.Arr()
	snap := r.Snapshot()
	up := 0
	for i, s := range snap {
		if i < startLines {
			arr.Str(s.ID + "=" + s.Addr)
		}
		if s.Up {
			up++
		}
	}
	e := log.Info().Str("listen", addr).Array("backends", arr)
	if named || p.cfg.Name != "default" {
		e = e.Str("pool", p.cfg.Name)
	}
	if len(snap) > startLines {
		e = e.Int("more_backends", len(snap)-startLines)
	}
	if cfg := r.Config(); cfg.Balance != ring.RoundRobin || cfg.SlowStart > 0 {
		e = e.Str("balance", cfg.Balance.String()).Dur("slow_start", cfg.SlowStart)
	}
	e.Int("up", up).Int("down", len(snap)-up).Str("sticky", sticky).Int64("max_conns", maxConns).Msg("listening")
}

// startLines is how many backends the "listening" line names.
const startLines = 16
