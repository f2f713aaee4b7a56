package l4

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	maxEvents  = 256
	wakeMark   = -1 // epoll data (Fd) of the poller's eventfd
	listenMark = -2 // epoll data (Fd) of a listener; Pad holds its descriptor
)

// poller is a loop's epoll set (level-triggered) and its call queue: the only state of a loop
// other goroutines touch. A call is queued under a lock and the loop is woken through an
// eventfd in the set.
type poller struct {
	epfd   int
	epoll  *os.File // epfd, registered in Go's netpoller: the loop goroutine parks there, no thread blocks
	wakefd int
	events [maxEvents]unix.EpollEvent

	mu     sync.Mutex // guards calls and closed
	calls  []func()
	closed bool // wakefd is closed: post does nothing
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, opError("epoll_create1", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, opError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeMark}
	err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev)
	if err == nil {
		// Non-blocking, so os.NewFile registers it with the runtime's poller.
		err = unix.SetNonblock(epfd, true)
	}
	if err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, opError("epoll_ctl", err)
	}
	return &poller{epfd: epfd, epoll: os.NewFile(uintptr(epfd), "epoll"), wakefd: wakefd}, nil
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

// pollEvents is epoll_wait without blocking. A raw syscall: it returns at once, so the
// scheduler need not know.
func (p *poller) pollEvents() (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd),
		uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// post queues fn to run on the loop's goroutine and returns at once.
// Once the poller is closed it does nothing: its eventfd's number may belong to another
// file by then.
func (p *poller) post(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.calls = append(p.calls, fn)
	one := [8]byte{1}
	unix.Write(p.wakefd, one[:]) // non-blocking
}

// runCalls runs the queued calls, on the loop's goroutine.
func (p *poller) runCalls() {
	var buf [8]byte
	unix.Read(p.wakefd, buf[:])
	p.mu.Lock()
	calls := p.calls
	p.calls = nil
	p.mu.Unlock()
	for _, fn := range calls {
		fn()
	}
}

func (p *poller) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.epoll.Close()
	unix.Close(p.wakefd)
}

func opError(call string, err error) error { return &net.OpError{Op: call, Err: err} }
