package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// MaxConns caps the connections one admin or metrics listener holds open at once. A
// connection over it is closed as soon as it is accepted, so no number of admin clients
// can take the descriptors the data path needs: the application counts MaxConns (and one
// more, the connection being refused) per listener in its descriptor reserve.
const MaxConns = 64

// The timeouts of an admin or metrics listener's connections: a client that is slow to send
// its request, or idle between requests, gives its slot back within seconds.
const (
	ReadHeaderTimeout = 3 * time.Second  // from accept (or the end of the last answer) to a whole head
	ReadTimeout       = 5 * time.Second  // to a whole request, body included (bodies are under 64 KiB)
	WriteTimeout      = 10 * time.Second // to a whole answer: /metrics of many backends included
	IdleTimeout       = 5 * time.Second  // a kept-alive connection without a request
)

// unixPrefix marks a listen address as a Unix socket path: unix:/run/lb/admin.sock.
const unixPrefix = "unix:"

// IsUnix reports whether addr names a Unix socket (unix:PATH), and returns PATH.
func IsUnix(addr string) (string, bool) {
	return strings.CutPrefix(addr, unixPrefix)
}

// Listen listens on addr for an admin or metrics listener: host:port (TCP), or unix:PATH, a
// Unix socket whose file has mode 0600 (only lb's user can connect), made anew: a stale
// socket file left at PATH by an lb that died is removed first, while a socket some process
// still listens on, or a file that is not a socket, is an error. Closing the listener
// removes the socket file. The listener holds at most MaxConns connections at once. via, if
// not nil, gets the socket instead, calling bind only if it has none to give (an upgrade in
// place hands over the old process's).
func Listen(addr string, via Via) (net.Listener, error) {
	network, bind := "tcp", bindTCP
	if path, ok := IsUnix(addr); ok {
		network, addr, bind = "unix", path, listenUnix
	}
	if via == nil {
		via = func(network, addr string, bind func(network, addr string) (net.Listener, error)) (net.Listener, error) {
			return bind(network, addr)
		}
	}
	ln, err := via(network, addr, bind)
	if err != nil {
		return nil, err
	}
	return &capped{Listener: ln}, nil
}

// Via gets a listening socket for network and addr: bind makes a new one.
type Via func(network, addr string, bind func(network, addr string) (net.Listener, error)) (net.Listener, error)

func bindTCP(network, addr string) (net.Listener, error) { return net.Listen(network, addr) }

// listenUnix binds a Unix socket at path with mode 0600.
func listenUnix(_, path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("unix: wants a path, e.g. unix:/run/lb/admin.sock")
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// The socket's own mode before bind becomes the file's (less the umask): no moment in
	// which another user could connect.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var chmodErr error
		err := c.Control(func(fd uintptr) { chmodErr = unix.Fchmod(int(fd), 0o600) })
		return errors.Join(err, chmodErr)
	}}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod the admin socket: %w", err)
	}
	return ln, nil
}

// removeStale removes a socket file at path that no process listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it or pick another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: a process listens on this socket already (another lb?): stop it or pick another path", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	return nil
}

// capped is a listener that holds at most MaxConns connections: Accept closes at once any
// connection over the cap and waits for the next.
type capped struct {
	net.Listener
	open atomic.Int64 // connections accepted and not yet closed
}

// Accept returns the next connection under the cap.
func (l *capped) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > MaxConns {
			l.open.Add(-1)
			c.Close()
			continue
		}
		return &cappedConn{Conn: c, l: l}, nil
	}
}

// cappedConn gives its slot back when it is closed, once.
type cappedConn struct {
	net.Conn
	l    *capped
	once sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// Endpoint serves one handler on one admin or metrics listener with the timeouts above. Its
// goroutine runs from Serve until Shutdown returns.
type Endpoint struct {
	srv  *http.Server
	done chan struct{}
}

// Serve serves h on ln (made by Listen) until Shutdown. An error that stops it early is
// logged to log.
func Serve(ln net.Listener, h http.Handler, log zerolog.Logger) *Endpoint {
	e := &Endpoint{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: ReadHeaderTimeout,
			ReadTimeout:       ReadTimeout,
			WriteTimeout:      WriteTimeout,
			IdleTimeout:       IdleTimeout,
			MaxHeaderBytes:    16 << 10,
			// Accept errors (EMFILE) and bad handshakes, in lb's log format rather than on
			// stderr's plain log.
			ErrorLog: stdlog.New(log.With().Str("listen", ln.Addr().String()).Logger(), "", 0),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(e.done)
		if err := e.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("listen", ln.Addr().String()).Msg("admin listener stopped")
		}
	}()
	return e
}

// Shutdown stops the listener and waits for the requests in flight until ctx ends, then
// closes what is left. It returns once the serving goroutine has ended; the error is ctx's
// when requests had to be cut.
func (e *Endpoint) Shutdown(ctx context.Context) error {
	err := e.srv.Shutdown(ctx)
	if err != nil {
		e.srv.Close()
	}
	<-e.done
	return err
}

// Private reports whether only this machine can reach addr: a Unix socket, or a TCP address
// whose host is localhost or a loopback IP. An empty host is every interface; another name
// may resolve anywhere.
func Private(addr string) bool {
	if _, ok := IsUnix(addr); ok {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return host == "localhost" || err == nil && ip.IsLoopback()
}
