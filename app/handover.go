package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// handoverName names, among the descriptors an upgrade passes on, the socket over which the
// old process sends its established connections to the new one.
const handoverName = "lb-handover"

// handoverTimeout bounds the hand-over: connections whose bytes are still in a pipe get this
// long to flush and move; what is left drains in the old process as on shutdown.
const handoverTimeout = 5 * time.Second

// offerHandover makes the socket pair of one upgrade: the end this process sends on, and the
// other, passed to the new process under handoverName.
func (u *Upgrader) offerHandover() (*net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hand-over socket: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), handoverName)
	defer theirs.Close() // tableflip passes on a copy of its own
	ours, err := fileConn(os.NewFile(uintptr(fds[0]), handoverName))
	if err != nil {
		return nil, err
	}
	if err := u.tf.AddFile(handoverName, theirs); err != nil {
		ours.Close()
		return nil, fmt.Errorf("hand-over socket: %w", err)
	}
	return ours, nil
}

// takeHandover is the socket the old process sends its connections on; nil when this
// process replaces none.
func (u *Upgrader) takeHandover() (*net.UnixConn, error) {
	if u == nil || !u.tf.HasParent() {
		return nil, nil
	}
	f, err := u.tf.File(handoverName)
	if f == nil || err != nil {
		return nil, err
	}
	return fileConn(f)
}

// fileConn makes f, a Unix socket, a *net.UnixConn, and closes f (the conn has a copy).
func fileConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("hand-over socket: %w", err)
	}
	return c.(*net.UnixConn), nil
}

// handOver sends this process's established connections to the new one over c, and closes
// c: the new process has all it will get. Those that cannot move drain here.
func (a *App) handOver(c *net.UnixConn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), handoverTimeout)
	defer cancel()
	start := time.Now()
	moved, kept, err := a.srv.Handover(ctx, c)
	e := a.log.Info()
	if err != nil {
		e = a.log.Warn().Err(err)
	}
	e.Int("moved", moved).Int("drain_here", kept).Dur("took", time.Since(start)).Msg("connections handed over")
}

// adopt takes the connections the old process hands over on c, until it closes c; the
// returned stop ends it early (Shutdown) and waits for it.
func (a *App) adopt(c *net.UnixConn) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := a.srv.Adopt(c)
		e := a.log.Info()
		if err != nil {
			e = a.log.Warn().Err(err)
		}
		e.Int("adopted", n).Msg("connections taken over from the old process")
	}()
	return func() {
		c.Close()
		<-done
	}
}
