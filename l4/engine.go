//go:build linux

package l4

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	"lb/uring"
)

// Engine is how a Server's loops hear of events and carry out I/O: epoll readiness and
// system calls, or io_uring completions. The connection's stages and phases are the same on
// both.
type Engine uint8

const (
	EngineAuto  Engine = iota // io_uring where the kernel allows it, else epoll
	EngineEpoll               // epoll readiness, a system call per read and write
	EngineUring               // io_uring: sends and receives submitted and reaped in batches
)

var engineNames = [...]string{"auto", "epoll", "uring"}

func (e Engine) String() string {
	if int(e) < len(engineNames) {
		return engineNames[e]
	}
	return fmt.Sprintf("engine(%d)", e)
}

// ParseEngine reads an engine's name: auto, epoll or uring.
func ParseEngine(s string) (Engine, error) {
	for i, n := range engineNames {
		if s == n {
			return Engine(i), nil
		}
	}
	return 0, fmt.Errorf("engine %q: want auto, epoll or uring", s)
}

// ErrUringUnavailable is returned by New for EngineUring where the kernel, its policy or a
// container's seccomp profile refuses io_uring.
var ErrUringUnavailable = errors.New("io_uring is not available here")

// resolveEngine is the engine e stands for on this machine: auto becomes uring or epoll, and
// uring where io_uring is refused is an error that says why and what to do.
func resolveEngine(e Engine) (Engine, error) {
	if e == EngineEpoll {
		return e, nil
	}
	err := uringUsable()
	switch {
	case err == nil:
		return EngineUring, nil
	case e == EngineAuto:
		return EngineEpoll, nil
	}
	return 0, fmt.Errorf("%w (%v): run with --engine epoll, or --engine auto to use io_uring where it is allowed", ErrUringUnavailable, err)
}

// uringUsable says why io_uring cannot run lb's loops here, or nil if it can. It sets up
// the kind of ring a loop uses, with a provided-buffer ring, once per process:
// kernel.io_uring_disabled, a seccomp filter (Docker's default refuses io_uring_setup) and a
// kernel too old for SINGLE_ISSUER, DEFER_TASKRUN or buffer rings all show up there.
var uringUsable = sync.OnceValue(func() error {
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) == "2" {
		return errors.New("kernel.io_uring_disabled is 2")
	}
	runtime.LockOSThread() // SINGLE_ISSUER ties the ring to its thread
	defer runtime.UnlockOSThread()
	r, err := uring.New(uring.Options{Entries: 8, Flags: ringFlags})
	if err != nil {
		return err
	}
	defer r.Close()
	b, err := r.RegisterBufRing(0, 8, 4096)
	if err != nil {
		return fmt.Errorf("provided-buffer ring: %w", err)
	}
	return b.Close()
})

// ringFlags are the setup flags of a loop's ring: one thread submits, and completions are
// reaped only when the loop asks, in its own enter.
const ringFlags = uring.SetupSingleIssuer | uring.SetupDeferTaskrun | uring.SetupSubmitAll

// newEvents makes a loop's engine: e is resolved (epoll or uring).
func newEvents(e Engine, calls *callQueue) (events, error) {
	if e == EngineUring {
		return newRingEvents(calls), nil
	}
	return newPoller(calls)
}
