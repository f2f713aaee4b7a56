//go:build linux

package l4

import (
	"math"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"lb/route"
)

const acceptBatch = 32 // accepts per listener event before other events get a turn

// accept4 is accept4(2) on a non-blocking listener, the peer's address written to sa; a test
// replaces it to inject EMFILE.
var accept4 = func(lfd int, sa *unix.RawSockaddrAny) (int, error) {
	size := uint32(unix.SizeofSockaddrAny)
	fd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&size)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// addrPort reads a socket address as accept4 wrote it, without allocating.
func addrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&in4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(port[0])<<8|uint16(port[1]))
	case unix.AF_INET6:
		in6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&in6.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(in6.Addr).Unmap(), uint16(port[0])<<8|uint16(port[1]))
	}
	return netip.AddrPort{}
}

// acceptor takes a loop's new connections from its listeners. Errors that say the process or
// the system is out of something pause a listener with a doubling back-off; at the
// connection limit the listeners leave the epoll set and the kernel's backlog holds clients.
type acceptor struct {
	s       *Server
	ev      events
	lfds    []*listener   // listeners this loop accepts from
	paused  []pausedFD    // listeners taken out of the epoll set
	backoff time.Duration // current back-off; 0 when accepts succeed
	peer    unix.RawSockaddrAny
}

// pausedFD is a listener out of the epoll set: until a time (back-off), or while the server
// is full.
type pausedFD struct {
	fd    int
	until int64
	full  bool
}

// listener is one address lb accepts connections on.
type listener struct {
	fd     int
	name   string // its address, for logs
	routes atomic.Pointer[routeSet]
}

// routeSet is where a listener sends connections: swapped whole by Reroute, so a connection
// sees one table and the pools it indexes.
type routeSet struct {
	table   *route.Table // nil: every connection goes to the first pool
	pools   []*pool
	needs   route.Needs // what the table looks at
	noMatch []byte      // the answer to an HTTP client no route matches
}

func newRouteSet(r Routes, pools []*pool) *routeSet {
	rs := &routeSet{table: r.Table, pools: pools}
	if r.Table != nil {
		rs.needs, rs.noMatch = r.Table.Needs(), noMatchAnswer(r.NoMatchStatus)
	}
	return rs
}

// listen starts accepting from lis.
func (a *acceptor) listen(lis *listener) {
	a.lfds = append(a.lfds, lis)
	a.watch(lis.fd)
}

func (a *acceptor) watch(lfd int) {
	if err := a.ev.watchListener(lfd); err != nil {
		a.s.log.Error().Err(err).Msg("cannot watch the listener")
	}
}

// stop takes the listeners out of the epoll set, so none is used after Shutdown closes it.
func (a *acceptor) stop() {
	for _, lis := range a.lfds {
		a.ev.unwatchListener(lis.fd)
	}
	a.lfds, a.paused = nil, nil
}

// listening returns the listener of socket lfd, or nil if the loop no longer accepts from it.
func (a *acceptor) listening(lfd int) *listener {
	for _, lis := range a.lfds {
		if lis.fd == lfd {
			return lis
		}
	}
	return nil
}

// accepted is a connection take accepted.
type accepted struct {
	fd     int
	client netip.AddrPort
	lis    *listener
}

// take accepts one connection from lfd. It returns false when there is none to take now:
// none queued, an error that pauses lfd, or the server is full. An error about one
// connection (it was reset while queued) is skipped.
func (a *acceptor) take(lfd int, now int64) (accepted, bool) {
	lis := a.listening(lfd)
	if lis == nil {
		return accepted{}, false // an event of the batch that stop ended
	}
	for {
		if a.s.full() {
			a.pause(pausedFD{fd: lfd, full: true})
			a.s.limitReached()
			return accepted{}, false
		}
		fd, err := accept4(lfd, &a.peer)
		switch {
		case err == nil:
			a.backoff = 0
			a.s.active.Add(1)
			a.s.conns.Add(1)
			return accepted{fd: fd, client: addrPort(&a.peer), lis: lis}, true
		case err == unix.EINTR, err == unix.ECONNABORTED, err == unix.EPROTO, err == unix.EPERM:
			continue
		case err != unix.EAGAIN:
			a.backOff(lfd, err, now)
		}
		return accepted{}, false
	}
}

// backOff pauses accepting from lfd after an error that says the process or the system is
// out of something, for 5 ms doubling to 1 s.
func (a *acceptor) backOff(lfd int, err error, now int64) {
	if a.backoff == 0 {
		a.backoff = 5 * time.Millisecond
		a.s.log.Warn().Err(err).Msg("accept failed: pausing accepts, open connections go on")
	} else {
		a.backoff = min(2*a.backoff, time.Second)
	}
	a.pause(pausedFD{fd: lfd, until: now + int64(a.backoff)})
}

// pause takes a listener out of the epoll set until resume puts it back.
func (a *acceptor) pause(p pausedFD) {
	a.ev.unwatchListener(p.fd)
	a.paused = append(a.paused, p)
}

// resume watches again the listeners whose back-off is over, and those paused at the
// connection limit once the server is below it.
func (a *acceptor) resume(now int64) {
	for i := 0; i < len(a.paused); i++ {
		p := a.paused[i]
		if p.full && a.s.full() || !p.full && now < p.until {
			continue
		}
		a.paused = append(a.paused[:i], a.paused[i+1:]...)
		i--
		a.watch(p.fd)
		if p.full {
			a.s.limitLeft()
		}
	}
}

// roomFreed is told of each close: a listener paused at the limit may go on.
func (a *acceptor) roomFreed(now int64) {
	if len(a.paused) > 0 {
		a.resume(now)
	}
}

// wakeAt is when the first back-off ends: the sweep must run then. MaxInt64 when none runs.
func (a *acceptor) wakeAt() int64 {
	at := int64(math.MaxInt64)
	for _, p := range a.paused {
		if !p.full {
			at = min(at, p.until)
		}
	}
	return at
}

// nextWake is when the sweep must run for a back-off to end: 5 ms while one runs.
func (a *acceptor) nextWake(every time.Duration) time.Duration {
	if a.backoff > 0 {
		return min(every, 5*time.Millisecond)
	}
	return every
}

func listenerFD(ln *net.TCPListener) (int, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) {
		fd = int(s)
		// Inherited by every accepted socket, so no per-connection setsockopt is needed.
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	}); err != nil {
		return -1, err
	}
	return fd, nil
}
