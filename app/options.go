package app

import (
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"

	"lb/accesslog"
	"lb/config"
	"lb/health"
	"lb/l4"
	"lb/serversfile"
)

// Options are what lb runs with: where its configuration comes from, and the settings of
// the process that a reload does not change.
type Options struct {
	Source Source
	// Watch reloads the configuration when its file changes on disk, as SIGHUP does.
	Watch        bool
	Threads      int           // event loops, and GOMAXPROCS once probes are done
	DrainTimeout time.Duration // how long Shutdown lets open connections finish; also a removed backend's wait
	// L4 is the data path's settings; Start fills in Engine, Pools, ReservedFDs, Log,
	// AccessLog and Resolver.
	L4 l4.Config
	// Engine is --engine: auto, epoll or uring ("" is auto). A config file's engine: wins
	// over it, as the file's pool keys win over the flags.
	Engine    string
	SlowStart time.Duration      // every pool's ramp; 0: off
	Expect    health.StatusRange // the statuses an HTTP check counts as up
	Sessions  Sessions           // the store of learned sessions, for the pools that learn them
	AccessLog accesslog.Config
	Admin     Admin
	Version   string // for /metrics and the admin API
	Log       zerolog.Logger
	// Upgrade hands the listening sockets to the binary that replaces this one (SIGUSR2, lb
	// upgrade), and takes them from the one this replaces; nil: no upgrades in place.
	Upgrade *Upgrader
	// Activated are the sockets systemd passed (Activation), served on instead of binding.
	Activated *Activated
	// PIDFile, if not "", holds the pid of the process that serves: written once this one
	// accepts (by the new process of an upgrade as it takes over), removed as it stops.
	PIDFile string
	// Resolver looks up backend names and discover= lines, for the data path, the probes and
	// discovery alike, and the Redis session store's host; nil: the system's.
	Resolver *net.Resolver
}

// Source is where the configuration comes from, and what a reload reads again: a config
// file (lb.yaml), or the flags' servers file and listen address, which config.FromFlags
// makes the same config.Config, so that both go through one load and one reload.
type Source struct {
	ConfigFile  string            // lb.yaml; "" for the flags' form
	ServersFile string            // the flags' servers file
	Listen      string            // the flags' listen address
	Servers     *serversfile.File // servers given without a file (lb demo); used when both files are ""
	Defaults    config.Pool       // the flags' pool settings: what a pool leaves out
}

// Load reads the configuration. A mistake in a file is a *config.Error or a
// *serversfile.LineError, which say where.
func (s Source) Load() (*config.Config, error) {
	switch {
	case s.ConfigFile != "":
		return config.Load(s.ConfigFile, s.Defaults)
	case s.ServersFile != "":
		f, err := serversfile.LoadFile(s.ServersFile)
		if err != nil {
			return nil, err
		}
		return config.FromFlags(s.Listen, s.ServersFile, f, s.Defaults), nil
	case s.Servers != nil:
		return config.FromFlags(s.Listen, "", s.Servers, s.Defaults), nil
	}
	return nil, fmt.Errorf("no configuration: give a config file or a servers file")
}

// File is the file a reload reads and Watch watches; "" when there is none.
func (s Source) File() string {
	if s.ConfigFile != "" {
		return s.ConfigFile
	}
	return s.ServersFile
}

// Admin is the admin and metrics listeners' settings.
type Admin struct {
	Listen  string // host:port or unix:PATH; "": off
	Token   string // required with every request but /healthz and /readyz when set
	Metrics string // host:port or unix:PATH of the metrics-only listener; "": off
}

// InputError is a mistake the operator fixes in the flags or files: lb exits with status 2.
type InputError struct{ Err error }

func (e InputError) Error() string { return e.Err.Error() }

// Unwrap returns the mistake.
func (e InputError) Unwrap() error { return e.Err }
