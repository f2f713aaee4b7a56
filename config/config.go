// Package config reads lb's config file: listeners, each with an ordered list of routes,
// and named pools of backends, each with its own balancing, health check, stickiness, PROXY
// and timeouts. The flags of `lb serve` are the one-listener, one-pool shorthand of the same
// Config (FromFlags), so that lb has one code path.
//
// Loading goes in three steps, as caddy-l4's modules do: parse reads the YAML nodes into
// the Config, checking each value where it stands; provision reads the servers files and
// builds the route tables; validate checks what spans several places (a route's pool
// exists, no route is hidden behind a catch-all, no address is listened on twice). Every
// mistake is an *Error carrying the file, line and column of the YAML node at fault.
package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"lb/ring"
	"lb/route"
	"lb/serversfile"
)

// Config is a loaded, provisioned and valid configuration. Treat it as read-only: it is
// shared by whoever serves it.
type Config struct {
	File      string // the path it was loaded from; "" when built from flags
	Listeners []Listener
	Pools     []Pool // in file order; route.Route.Pool indexes this slice
	// Engine is the file's engine: one of Engines, or "" when it leaves the key out (then
	// --engine decides). A reload cannot change the engine that runs.
	Engine string
}

// Engines are the names engine: and --engine take: auto (io_uring where the kernel allows
// it, else epoll), epoll or uring. l4.ParseEngine reads each of them.
var Engines = []string{"auto", "epoll", "uring"}

// WantEngine is what engine: and --engine allow, as their errors say it.
const WantEngine = "auto, epoll or uring"

// Listener is one address lb listens on and the routes of the connections it accepts.
type Listener struct {
	Listen string // host:port
	// Name matches the socket systemd passes under that name (FileDescriptorName=); "" for
	// none: a passed socket is then matched by address.
	Name string
	// Routes in order, as written; Table matches them, first match wins.
	Routes []Route
	Table  *route.Table
	// NoMatchStatus is the HTTP status an HTTP client gets when no route matches (others
	// are closed): 503 unless the file says otherwise.
	NoMatchStatus int
	Line          int // of the listener in the file; 0 when built from flags
}

// Route is one route as written: its conditions, and the pool it sends to by name and by
// index into Config.Pools.
type Route struct {
	Match    route.Match
	PoolName string
	Pool     int
	Line     int
}

// Pool is a named set of backends and how lb treats them. Every field but Name and
// Backends defaults to the value of the matching flag of `lb serve`.
type Pool struct {
	Name     string
	Backends []ring.Backend // normalised addresses, unique addresses and ids
	// Discover are the servers' discover= lines: names whose backends DNS gives. A pool has
	// at least one backend or one discover line.
	Discover    []serversfile.Discover
	ServersFrom string // the file the servers were read from, for logs: a servers file, or the config file
	// Balance is the algorithm that picks a backend: a name ring.ParseBalance takes.
	Balance           string
	Health            Health
	StickyCookie      string // lb's own sticky cookie ("" off)
	StickyCookieAttrs string
	SessionCookie     string // the application's session cookie lb learns ("" off)
	SendProxy         string // the PROXY header lb sends the backend: "" (none), "v1" or "v2"
	ConnectTimeout    time.Duration
	IdleTimeout       time.Duration
	Line              int // of the pool in the file; 0 when built from flags
}

// Health is how a pool's backends are probed.
type Health struct {
	Interval, Timeout time.Duration
	Rise, Fall        int
	HTTPPath          string // "" for a TCP connect; a path such as /healthz for an HTTP GET
}

// Error is a mistake in the config file, at a line and column (0 when it is about the file
// as a whole). Its message says what is wrong and what is allowed.
type Error struct {
	File      string
	Line, Col int
	Msg       string
	Err       error // the underlying error, e.g. a servers file's *serversfile.LineError
}

// Error formats the error as FILE:LINE:COL: message, as compilers do, so that editors jump
// to it.
func (e *Error) Error() string {
	switch {
	case e.Line == 0:
		return e.File + ": " + e.Msg
	case e.Col == 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

// DefaultNoMatchStatus is what an HTTP client gets when no route of its listener matches.
const DefaultNoMatchStatus = 503

// Load reads, provisions and validates the config file at path. defaults gives every pool
// setting the file leaves out (its Name, Backends and Line are ignored): the values of
// `lb serve`'s flags. servers_file paths are relative to the config file's directory.
// Mistakes in the file are *Error; a file that cannot be read gives the os error, wrapped.
func Load(path string, defaults Pool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return Parse(path, data, filepath.Dir(path), defaults)
}

// Parse is Load of data, named name in errors, with servers_file paths relative to dir.
func Parse(name string, data []byte, dir string, defaults Pool) (*Config, error) {
	p := parser{file: name, dir: dir, defaults: defaults}
	cfg, err := p.parse(data)
	if err != nil {
		return nil, err
	}
	if err := p.provision(cfg); err != nil {
		return nil, err
	}
	if err := p.validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// FromFlags is the Config the flags of `lb serve` describe: one listener on listen, one
// pool "default" of the servers of file (read from path) with the settings of pool, and one
// route that takes every connection to it.
func FromFlags(listen string, path string, servers *serversfile.File, pool Pool) *Config {
	pool.Name, pool.Line = "default", 0
	pool.Backends, pool.Discover = slices.Clone(servers.Backends), slices.Clone(servers.Discover)
	pool.ServersFrom = path
	tab, err := route.New([]route.Route{{Pool: 0}})
	if err != nil {
		panic(err) // one route is never empty
	}
	return &Config{
		Listeners: []Listener{{Listen: listen, Routes: []Route{{PoolName: pool.Name}}, Table: tab, NoMatchStatus: DefaultNoMatchStatus}},
		Pools:     []Pool{pool},
	}
}

// Pool returns the pool called name, or nil.
func (c *Config) Pool(name string) *Pool {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}

// ValidListen reports whether addr is host:port with a numeric port from 0 to 65535; the
// host may be empty (every interface), an IP address or a name.
func ValidListen(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || strings.ContainsAny(host, " /") {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// ValidCookieName reports whether s is an RFC 7230 token, as cookie names must be.
func ValidCookieName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > '~' || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}
