//go:build linux

package l4

import (
	"errors"
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	maxEvents  = 256
	wakeMark   = -1 // epoll data (Fd) of the call queue's eventfd
	listenMark = -2 // epoll data (Fd) of a listener; Pad holds its descriptor
)

// events is how a loop hears of its sockets and of posted calls, and closes sockets: an
// epoll set (poller, here) or an io_uring (ringEvents, uring_linux.go). The stages never
// see which.
type events interface {
	// start readies the engine on the loop's goroutine, before its first turn.
	start() error
	// turn waits until something happens or l.nextSweep passes, sets l.now, and
	// dispatches what happened to l.
	turn(l *loop) error
	// watch sets what one end of c waits for (EPOLL* bits); unwatch silences it.
	watch(c *conn, side int, ev uint32) error
	unwatch(c *conn, side int)
	watchListener(fd int) error
	unwatchListener(fd int)
	// closeSocket closes a socket of a connection, and ends what the engine had under way
	// on it.
	closeSocket(c *conn, side int)
	// settle makes the closes closeSocket queued take effect now, so that descriptors the
	// connection limit counts as free are free when an accept or a dial takes one.
	settle()
	// flows takes over the flows of a splicing connection when the engine moves its bytes
	// itself (io_uring); false: rearm watches its sockets for the pump.
	flows(l *loop, c *conn) bool
	// quiesce holds c's flows still for a hand-over and reports whether a request of the
	// engine's is still under way on them; unquiet lets them go on.
	quiesce(c *conn) bool
	unquiet(c *conn)
	close()
}

// poller is a loop's epoll set, level-triggered.
type poller struct {
	epfd   int
	epoll  *os.File // epfd, registered in Go's netpoller: the loop goroutine parks there, no thread blocks
	calls  *callQueue
	events [maxEvents]unix.EpollEvent
	wait   func(deadline int64) ([]unix.EpollEvent, error)
}

func newPoller(calls *callQueue) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, opError("epoll_create1", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeMark}
	err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, calls.wakefd, &ev)
	if err == nil {
		// Non-blocking, so os.NewFile registers it with the runtime's poller.
		err = unix.SetNonblock(epfd, true)
	}
	if err != nil {
		unix.Close(epfd)
		return nil, opError("epoll_ctl", err)
	}
	p := &poller{epfd: epfd, epoll: os.NewFile(uintptr(epfd), "epoll"), calls: calls}
	p.wait = p.waiter()
	return p, nil
}

// turn waits for epoll events and dispatches them.
func (p *poller) turn(l *loop) error {
	events, err := p.wait(l.nextSweep)
	if err != nil {
		return err
	}
	l.now = time.Now().UnixNano()
	for i := range events {
		ev := &events[i]
		switch ev.Fd {
		case wakeMark:
			var buf [8]byte
			unix.Read(p.calls.wakefd, buf[:])
			p.calls.run()
		case listenMark:
			l.accept(int(ev.Pad))
		default:
			if c, side := l.endOf(ev); c != nil {
				l.handle(c, side, ev.Events)
			}
		}
	}
	return nil
}

// waiter returns wait, which parks until events are ready or deadline (unix nanos) passes
// and returns them. It parks in Go's netpoller on the epoll descriptor (readable when events
// are ready), never in a blocking epoll_wait: a goroutine blocked in a syscall loses its P to
// sysmon, and each wake-up would then cost a hand-off between threads.
func (p *poller) waiter() func(deadline int64) ([]unix.EpollEvent, error) {
	rc, err := p.epoll.SyscallConn()
	var n int
	var pollErr error
	ready := func(uintptr) bool {
		n, pollErr = p.pollEvents()
		return n > 0 || pollErr != nil
	}
	var set int64
	return func(deadline int64) ([]unix.EpollEvent, error) {
		if err != nil {
			return nil, err
		}
		if deadline != set {
			set = deadline
			p.epoll.SetReadDeadline(time.Unix(0, deadline))
		}
		n, pollErr = 0, nil
		if err := rc.Read(ready); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
		if pollErr != nil && pollErr != unix.EINTR {
			return nil, pollErr
		}
		return p.events[:n], nil
	}
}

func (p *poller) pollEvents() (int, error) { return sysEpollPoll(p.epfd, p.events[:]) }

// sysEpollPoll is epoll_wait without blocking. A raw syscall: it returns at once, so the
// scheduler need not know.
func sysEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// endEvent is the epoll event of one end of c: its slot, and its generation beside the side,
// so that an event for the slot's earlier tenant is told apart (endOf).
func endEvent(c *conn, side int, events uint32) unix.EpollEvent {
	return unix.EpollEvent{Events: events, Fd: c.slot, Pad: int32(c.gen<<1 | uint32(side))}
}

// endOf returns the connection and side an epoll event names, or nil if it is gone.
func (l *loop) endOf(ev *unix.EpollEvent) (*conn, int) {
	return l.conns.lookup(ev.Fd, uint32(ev.Pad)>>1), int(ev.Pad & 1)
}

// watch sets the epoll interest of one end of c.
func (p *poller) watch(c *conn, side int, events uint32) error {
	en := &c.ends[side]
	op := unix.EPOLL_CTL_MOD
	if !en.watched {
		op = unix.EPOLL_CTL_ADD
	}
	ev := endEvent(c, side, events)
	if err := sysEpollCtl(p.epfd, op, en.fd, &ev); err != nil {
		return opError("epoll_ctl", err)
	}
	return nil
}

// unwatch takes one end of c out of the epoll set. An interest of 0 is not enough to silence
// a socket: epoll reports EPOLLHUP and EPOLLERR whatever the interest, level-triggered, so an
// end that must not be heard from for a while leaves the set.
func (p *poller) unwatch(c *conn, side int) {
	if en := &c.ends[side]; en.watched {
		sysEpollCtl(p.epfd, unix.EPOLL_CTL_DEL, en.fd, nil)
	}
}

func (p *poller) watchListener(lfd int) error {
	// EPOLLEXCLUSIVE: a new connection wakes one loop, not all of them.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: listenMark, Pad: int32(lfd)}
	return sysEpollCtl(p.epfd, unix.EPOLL_CTL_ADD, lfd, &ev)
}

func (p *poller) unwatchListener(lfd int) { sysEpollCtl(p.epfd, unix.EPOLL_CTL_DEL, lfd, nil) }

// closeSocket closes a socket, which also takes it out of the epoll set.
func (p *poller) closeSocket(c *conn, side int) { sysClose(c.ends[side].fd) }

func (p *poller) start() error { return nil }

func (p *poller) settle() {} // closeSocket closes at once

// The pump moves a splicing connection's bytes with read, write and splice.
func (p *poller) flows(*loop, *conn) bool { return false }
func (p *poller) quiesce(*conn) bool      { return false }
func (p *poller) unquiet(*conn)           {}

func (p *poller) close() { p.epoll.Close() }

func opError(call string, err error) error { return &net.OpError{Op: call, Err: err} }
