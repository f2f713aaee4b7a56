package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cloudflare/tableflip"
)

// Upgrader replaces a running lb by the binary at its path without refusing a connection:
// the new process inherits the listening sockets, reads its configuration, probes its
// backends and only then accepts; until it says so the old one goes on accepting, and a new
// process that fails to start leaves the old one serving. tableflip (Cloudflare's) carries
// the descriptors, the readiness and the pid file across the exec.
type Upgrader struct {
	tf *tableflip.Upgrader
}

// upgradeTimeout is how long a new process may take to be ready: its probes included.
const upgradeTimeout = time.Minute

// NewUpgrader makes the process's one Upgrader: a second call fails.
func NewUpgrader() (*Upgrader, error) {
	// tableflip starts os.Args[0]: the binary's path, so that an lb started through PATH
	// upgrades too, and a file replaced at that path is what starts.
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find lb's own binary: %w", err)
	}
	os.Args[0] = exe
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: upgradeTimeout})
	if err != nil {
		return nil, err
	}
	return &Upgrader{tf: tf}, nil
}

// via gets a listening socket: the old process's after an upgrade, else bind's new one.
func (u *Upgrader) via(network, addr string, bind func(network, addr string) (net.Listener, error)) (net.Listener, error) {
	if u == nil {
		return bind(network, addr)
	}
	return u.tf.ListenWithCallback(network, addr, bind)
}

// ready tells the old process, if any, that this one accepts: it stops accepting, hands its
// connections over and exits.
func (u *Upgrader) ready() error {
	if u == nil {
		return nil
	}
	return u.tf.Ready()
}

// writePIDFile replaces the file at path by one that holds this process's pid, in one
// rename: a reader sees the old pid or the new one, never an empty file.
func writePIDFile(path string) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("--pid-file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--pid-file: %w", err)
	}
	return nil
}

// removePIDFile removes the file at path if it still holds this process's pid: after an
// upgrade it holds the new process's.
func removePIDFile(path string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}

// stop ends the upgrades and closes tableflip's copies of the listening sockets: lb is
// shutting down.
func (u *Upgrader) stop() {
	if u != nil {
		u.tf.Stop()
	}
}

// errNoUpgrader is Upgrade's error in an lb started without one (tests, lb demo).
var errNoUpgrader = errors.New("this lb was started without upgrades in place")

// Upgrade starts the binary at lb's path with the same arguments and environment, and
// returns once it accepts connections; this process then stops accepting, and Upgraded is
// closed so that its owner shuts it down. If the new process fails or is not ready within a
// minute, Upgrade returns why and this process serves on as before.
func (a *App) Upgrade() error {
	if a.o.Upgrade == nil {
		return errNoUpgrader
	}
	// The lb this one replaced may still be on its way out (draining what could not move):
	// tableflip starts no upgrade before it has exited, so wait for that, as long as its drain.
	ctx, cancel := context.WithTimeout(context.Background(), a.o.DrainTimeout+handoverTimeout)
	err := a.o.Upgrade.tf.WaitForParent(ctx)
	cancel()
	if err != nil {
		a.log.Error().Err(err).Msg("upgrade failed: serving on")
		return fmt.Errorf("upgrade failed, the running lb serves on: the lb it replaced has not exited: %w", err)
	}
	a.log.Info().Str("binary", os.Args[0]).Msg("upgrading: starting the new binary")
	c, err := a.o.Upgrade.offerHandover()
	if err == nil {
		if err = a.o.Upgrade.tf.Upgrade(); err != nil {
			c.Close()
		}
	}
	if err != nil {
		a.log.Error().Err(err).Msg("upgrade failed: serving on")
		return fmt.Errorf("upgrade failed, the running lb serves on: %w", err)
	}
	a.log.Info().Msg("upgraded: the new process accepts; this one stops")
	a.accepting.Store(false) // /readyz: 503 from here on
	a.handOver(c)
	a.upgradedOnce.Do(func() { close(a.upgraded) })
	return nil
}

// Upgraded is closed once a new process has taken over: shut this one down.
func (a *App) Upgraded() <-chan struct{} { return a.upgraded }
