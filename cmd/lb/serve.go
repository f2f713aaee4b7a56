package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"lb/accesslog"
	"lb/app"
	"lb/config"
	"lb/health"
	"lb/l4"
	"lb/ring"
	"lb/version"
)

// withEnv gives every flag an LB_<NAME> environment variable and its help group
// (flagCategories). It returns copies: cli sets a flag's value when it parses, and the
// flags shared by several commands are package variables, which would otherwise carry one
// run's values into the next.
func withEnv(flags ...cli.Flag) []cli.Flag {
	out := make([]cli.Flag, len(flags))
	for i, f := range flags {
		c := reflect.New(reflect.TypeOf(f).Elem()).Elem() // every cli flag is a pointer to a struct with EnvVars and Category
		c.Set(reflect.ValueOf(f).Elem())
		env := "LB_" + strings.ToUpper(strings.ReplaceAll(f.Names()[0], "-", "_"))
		c.FieldByName("EnvVars").Set(reflect.ValueOf([]string{env}))
		cat := c.FieldByName("Category")
		cat.SetString(categoryOf(f.Names()[0], cat.String()))
		out[i] = c.Addr().Interface().(cli.Flag)
	}
	return out
}

var (
	stickyCookieFlag  = &cli.StringFlag{Name: "sticky-cookie", Usage: "`NAME` of lb's sticky cookie: a request carrying NAME=<backend id> goes to that backend while it is up; others get NAME inserted into their first response"}
	clusterFlag       = &cli.StringFlag{Name: "cluster-name", Value: "default", Usage: "namespace of the sessions in Redis: replicas with the same name share them"}
	sessionCookieFlag = &cli.StringFlag{Name: "session-cookie", Usage: "`NAME` of the application's session cookie (e.g. PHPSESSID) to learn from the backends' first responses: later requests carrying it go to the same backend while it is up"}
	sessionStoreFlag  = &cli.StringFlag{Name: "session-store", Value: "memory", Usage: "where learned sessions live: memory (this process) or redis://[user:password@]host:port/db, redis+sentinel://[user:password@]host:port[,host:port...]/master[/db] or redis+cluster://[user:password@]host:port[,host:port...] (shared by every replica of --cluster-name)"}
	serversFlag       = &cli.StringFlag{Name: "servers", Aliases: []string{"f"}, Value: "servers.txt", Usage: "`FILE` of backends, one per line: host:port or http://host:port, then optional weight=N id=NAME maxconn=N check= proxy= discover= (docs/configuration.md)"}
	listenFlag        = &cli.StringFlag{Name: "listen", Usage: "`ADDR` to listen on, e.g. 127.0.0.1:7777 or [::1]:7777 (overrides --port)"}
	portFlag          = &cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 7777, Usage: "`PORT` to listen on, all interfaces"}
	watchFlag         = &cli.BoolFlag{Name: "watch", Usage: "reload the servers file, or the --config file, when its content changes (SIGHUP reloads either at any time)"}
	pidFileFlag       = &cli.StringFlag{Name: "pid-file", Usage: "`FILE` to hold the pid of the lb that serves: written at start, and by the new process of an upgrade (SIGUSR2, lb upgrade) as it takes over"}

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
func parseBalance(c *cli.Context, o *app.Options) (err error) {
	o.Source.Defaults.Balance, o.SlowStart = c.String("balance"), c.Duration("slow-start")
	o.Source.Defaults.Health.HTTPPath = c.String("health-http")
	o.Expect, err = parseExpect(c)
	return err
}

// parseExpect reads --health-expect-status.
func parseExpect(c *cli.Context) (health.StatusRange, error) {
	expect, err := health.ParseStatusRange(c.String("health-expect-status"))
	if err != nil {
		return expect, badInput{fmt.Errorf("--health-expect-status %s: want a status or a range from 100 to 599, e.g. 200-399 or 200", c.String("health-expect-status"))}
	}
	return expect, nil
}

// checked is bad, a setting out of range, as the flag that set it: nil when bad is. The
// message shows the value given, but for those that may hold a secret.
func checked(c *cli.Context, bad *config.Invalid) error {
	if bad == nil {
		return nil
	}
	flag := strings.NewReplacer("health.rise", "rise", "health.fall", "fall", ".", "-", "_", "-").Replace(bad.Key)
	given := fmt.Sprint(" ", c.Value(flag))
	if flag == "session-store" || flag == "admin-token" {
		given = ""
	}
	return badInput{fmt.Errorf("--%s%s: want %s", flag, given, bad.Want)}
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
		&cli.DurationFlag{Name: "health-interval", Value: 2 * time.Second, Usage: "time between health probes (TCP or HTTP) of each backend"},
		&cli.DurationFlag{Name: "health-timeout", Value: time.Second, Usage: "bound on each health probe: the TCP connect, or the HTTP check's connect and answer"},
		&cli.IntFlag{Name: "rise", Value: 2, Usage: "consecutive good probes that bring a down backend up"},
		&cli.IntFlag{Name: "fall", Value: 3, Usage: "consecutive failed probes (or dials) that take an up backend down"},
		&cli.IntFlag{Name: "max-sniff-memory", Usage: "`MIB` of buffers all connections together may hold for request heads (and sticky response heads); past it a head goes on unparsed (0: 4 KiB a connection of --max-conns, 16 to 256 MiB)"},
		&cli.IntFlag{Name: "max-conns", Usage: "connections lb holds at most; past it new clients wait in the listen backlog (0: derived from the open-files limit, two descriptors a connection)"},
		sendProxyFlag, acceptProxyFlag, perIPMaxConnsFlag, perIPRateFlag, perIPBurstFlag, perIPv6PrefixFlag, queueTimeoutFlag, // clients.go
		&cli.StringFlag{Name: "engine", Value: "auto", Usage: "how the event loops hear of events and move bytes: auto (io_uring where the kernel allows it, else epoll), epoll or uring; a config file's engine: wins"},
		&cli.IntFlag{Name: "threads", Value: defaultThreads(), DefaultText: "half the CPUs", Usage: "event loops (and Go's GOMAXPROCS); the default, half the CPUs, leaves the rest to the kernel's network work and to co-located processes"},
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
		Usage:        "balance TCP connections over the backends of a servers file or the pools of a config file",
		Flags:        withEnv(append(append(append([]cli.Flag{configFlag, serversFlag, listenFlag, portFlag, watchFlag, pidFileFlag, resolverFlag}, routingFlags()...), balanceFlags()...), adminFlags()...)...),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			o, err := parseOptions(c)
			if err != nil {
				return err
			}
			if o.Resolver, err = resolverOf(c.String("resolver")); err != nil {
				return err
			}
			if o.Source, err = sourceOf(c, o); err != nil {
				return err
			}
			o.Watch = c.Bool("watch")
			o.Activated = app.Activation()
			if o.PIDFile = c.String("pid-file"); upgrades {
				if o.Upgrade, err = app.NewUpgrader(); err != nil {
					return err
				}
			}
			return serve(c.Context, o, nil)
		},
	}
}

// sourceOf is where lb serve and lb check take their configuration from: the config file
// of --config, or --servers and --listen, which cannot be given with it.
func sourceOf(c *cli.Context, o app.Options) (app.Source, error) {
	src := app.Source{Listen: o.Source.Listen, Defaults: o.Source.Defaults}
	if src.ConfigFile = c.String("config"); src.ConfigFile == "" {
		src.ServersFile = c.String("servers")
		return src, nil
	}
	for _, f := range []string{"servers", "listen", "port"} {
		if c.IsSet(f) {
			return src, badInput{fmt.Errorf("--%s with --config: the config file names its listeners and servers; give one or the other", f)}
		}
	}
	return src, nil
}

// defaultThreads is half the CPUs, at least one. The kernel does most of an L4 proxy's
// work (TCP, softirqs) on the same CPUs; on 2 CPUs shared with wrk and nginx, one loop
// beat two: less scheduler traffic between Go's threads, and a shorter latency tail.
func defaultThreads() int { return max(1, runtime.NumCPU()/2) }

// parseOptions reads the flags lb serve, lb check and lb demo share into Options, with the
// flags' pool settings as Source.Defaults; the caller says where the servers come from.
func parseOptions(c *cli.Context) (app.Options, error) {
	o := app.Options{
		Threads:      c.Int("threads"),
		Engine:       c.String("engine"),
		DrainTimeout: c.Duration("drain-timeout"),
		L4: l4.Config{
			SniffTimeout:   c.Duration("sniff-timeout"),
			CloseSlowHeads: c.String("sniff-timeout-action") == "close",
			MaxHeaderBytes: c.Int("max-header-bytes"),
			ConnectTimeout: c.Duration("connect-timeout"),
			IdleTimeout:    c.Duration("idle-timeout"),
			MaxConns:       c.Int("max-conns"),
			MaxHeadMemory:  int64(c.Int("max-sniff-memory")) << 20,
			ResolveEvery:   c.Duration("resolve-every"),
		},
		Sessions: app.Sessions{
			Store:      c.String("session-store"),
			TTL:        c.Duration("session-ttl"),
			Secret:     c.String("session-secret"),
			Timeout:    c.Duration("session-timeout"),
			MaxEntries: c.Int("session-max-entries"),
			Cluster:    c.String("cluster-name"),
		},
		Version: version.String(),
	}
	d := &o.Source.Defaults
	*d = config.Pool{
		Health: config.Health{
			Interval: c.Duration("health-interval"),
			Timeout:  c.Duration("health-timeout"),
			Rise:     c.Int("rise"),
			Fall:     c.Int("fall"),
		},
		StickyCookie:      c.String("sticky-cookie"),
		StickyCookieAttrs: c.String("sticky-cookie-attrs"),
		SessionCookie:     c.String("session-cookie"),
		ConnectTimeout:    o.L4.ConnectTimeout,
		IdleTimeout:       o.L4.IdleTimeout,
	}
	port := c.Int("port")
	if o.Source.Listen = c.String("listen"); o.Source.Listen == "" {
		o.Source.Listen = ":" + strconv.Itoa(port)
	}
	// The flags' own rules (those of a setting are Options.Check's), keyed as checked names flags.
	action := c.String("sniff-timeout-action")
	if err := checked(c, config.First(
		config.Bad(action != "route" && action != "close", "sniff_timeout_action", "route or close"),
		config.Bad(port < 0 || port > 65535, "port", "a port from 1 to 65535 (0: any free port)"),
		config.Bad(!config.ValidListen(o.Source.Listen), "listen", "host:port with a port from 0 to 65535, e.g. 127.0.0.1:7777, [::1]:7777 or :7777"),
		config.Bad(c.String("access-log-format") != "json" && c.String("access-log-format") != "console", "access_log_format", "json or console"),
		config.Bad(c.IsSet("session-store") && d.SessionCookie == "", "session_store", "--session-cookie NAME beside it: the store keeps learned sessions, and without the cookie there are none"),
	)); err != nil {
		return o, err
	}
	if err := parseClientOptions(c, &o); err != nil {
		return o, err
	}
	if err := parseBalance(c, &o); err != nil {
		return o, err
	}
	if err := checked(c, o.Check()); err != nil {
		return o, err
	}
	log, err := newLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return o, err
	}
	o.Log = log
	o.AccessLog = accesslog.Config{Dest: c.String("access-log"), Format: c.String("access-log-format"), Log: log}
	o.Admin = parseAdminOptions(c)
	return o, checked(c, o.Check())
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

// serve runs lb until SIGINT or SIGTERM, or until a new process took over (SIGUSR2, lb
// upgrade), then drains for up to the drain timeout. SIGHUP reloads the configuration;
// SIGUSR1 logs the counters and reopens the access log. onListen, if set, hears the first
// address once lb accepts connections.
func serve(parent context.Context, o app.Options, onListen func(addr string)) error {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Before lb says it listens: a SIGUSR1 or SIGHUP sent at once must not kill it.
	sig := make(chan os.Signal, 8) // room for a few different signals sent at once
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sig)

	a, err := app.Start(ctx, o)
	if errors.Is(err, app.ErrStopped) {
		o.Log.Info().Msg("stopped while starting")
		return nil
	}
	if err != nil {
		return err
	}
	if onListen != nil {
		onListen(a.Addrs()[0])
	}
	for {
		select {
		case s := <-sig:
			switch s {
			case syscall.SIGUSR1:
				a.ReopenLogs()
			case syscall.SIGHUP:
				a.Reload("SIGHUP")
			default:
				go a.Upgrade() // SIGUSR2; logs how it went, and closes Upgraded if it worked
			}
			continue
		case err := <-a.Failed():
			a.Shutdown(context.Background())
			return err
		case <-ctx.Done():
			stop() // a second signal ends lb at once
		case <-a.Upgraded():
		}
		drain, cancel := context.WithTimeout(context.Background(), o.DrainTimeout)
		defer cancel()
		a.Shutdown(drain)
		return nil
	}
}
