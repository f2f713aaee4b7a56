package l4

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loop owns an epoll set (level-triggered) and every connection it accepted; only its
// goroutine touches them, so the data path takes no lock. Other goroutines reach a loop
// through call, which runs a function on the loop's goroutine.

const (
	maxEvents   = 256
	acceptBatch = 32 // accepts per listener event before other events get a turn
	wakeMark    = -1 // epoll data (Fd) of the loop's eventfd
	listenMark  = -2 // epoll data (Fd) of a listener; Pad holds its descriptor
)

var (
	errIdle     = errors.New("idle timeout")
	errPeerGone = errors.New("peer reset or closed")
	errShutdown = errors.New("shutdown deadline")
)

// accept4 is accept4(2) on a non-blocking listener, without reading the peer's address
// (which would allocate); a test replaces it to inject EMFILE.
var accept4 = func(lfd int) (int, error) {
	fd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

type loop struct {
	s      *Server
	epfd   int
	epoll  *os.File // epfd, registered in Go's netpoller: the loop goroutine parks there, no thread blocks
	wakefd int
	done   chan struct{}

	mu    sync.Mutex // guards calls: the only state other goroutines touch
	calls []func()

	// Counters read by Stats.
	accepted     atomic.Uint64
	spliced      atomic.Uint64
	idleTimeouts atomic.Uint64

	// Owned by the loop goroutine.
	slots     []*conn
	free      []int32 // free slots
	spare     []*conn // closed conns kept for reuse
	gen       uint32
	lfds      []int         // listeners this loop accepts from
	paused    []pausedFD    // listeners taken out of the epoll set after EMFILE and friends
	backoff   time.Duration // current accept back-off; 0 when accepts succeed
	hot       *pipe         // the loop's pipe for flows that are not stalled
	heads     spareHeads    // head buffers between connections (headbuf.go)
	nextTrim  int64         // when spare head buffers and pipes are trimmed next
	buf       []byte        // copy buffer for small reads
	out       []byte        // a response head with the sticky cookie inserted
	field     []byte        // the Set-Cookie line
	now       int64         // unix nanos, read once per epoll_wait
	nextSweep int64
	stopped   bool
	dialAddrs map[string]*dialAddr // the resolver's entries this loop has dialed
	events    [maxEvents]unix.EpollEvent
}

// pausedFD is a listener out of the epoll set: until a time (accept back-off), or while the
// server is full.
type pausedFD struct {
	fd    int
	until int64
	full  bool
}

func newLoop(s *Server) (*loop, error) {
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
	return &loop{
		s: s, epfd: epfd, epoll: os.NewFile(uintptr(epfd), "epoll"), wakefd: wakefd,
		done: make(chan struct{}), dialAddrs: map[string]*dialAddr{}, buf: make([]byte, copySize),
	}, nil
}

// pollEvents is epoll_wait without blocking. A raw syscall: it returns at once, so the
// scheduler need not know.
func (l *loop) pollEvents() (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(l.epfd),
		uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func opError(call string, err error) error { return &net.OpError{Op: call, Err: err} }

// post queues fn to run on the loop's goroutine and returns at once. fn never runs if the
// loop has stopped; post must not be called once the loop is released.
func (l *loop) post(fn func()) {
	l.mu.Lock()
	l.calls = append(l.calls, fn)
	l.mu.Unlock()
	one := [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

// call runs fn on the loop's goroutine and returns when it has run.
func (l *loop) call(fn func()) {
	ran := make(chan struct{})
	l.post(func() { fn(); close(ran) })
	select {
	case <-ran:
	case <-l.done: // the loop ended on an epoll error
	}
}

func (l *loop) runCalls() {
	var buf [8]byte
	unix.Read(l.wakefd, buf[:])
	l.mu.Lock()
	calls := l.calls
	l.calls = nil
	l.mu.Unlock()
	for _, fn := range calls {
		fn()
	}
}

// run waits for events by parking in Go's netpoller on the epoll descriptor (readable when
// events are ready), never in a blocking epoll_wait: a goroutine blocked in a syscall loses
// its P to sysmon, and each wake-up would then cost a hand-off between threads.
func (l *loop) run() {
	defer close(l.done)
	rc, err := l.epoll.SyscallConn()
	var n int
	var pollErr error
	ready := func(uintptr) bool {
		n, pollErr = l.pollEvents()
		return n > 0 || pollErr != nil
	}
	var deadline int64
	for err == nil && !l.stopped {
		if deadline != l.nextSweep {
			deadline = l.nextSweep
			l.epoll.SetReadDeadline(time.Unix(0, deadline))
		}
		if err = rc.Read(ready); errors.Is(err, os.ErrDeadlineExceeded) {
			err = nil
		}
		if err == nil && pollErr != nil && pollErr != unix.EINTR {
			err = pollErr
		}
		l.now = time.Now().UnixNano()
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			switch ev.Fd {
			case wakeMark:
				l.runCalls()
			case listenMark:
				l.accept(int(ev.Pad))
			default:
				if c := l.slots[ev.Fd]; c != nil && c.gen == uint32(ev.Pad)>>1 {
					l.handle(c, int(ev.Pad&1), ev.Events)
				}
			}
		}
		n = 0
		if l.now >= l.nextSweep {
			l.sweep()
		}
	}
	if err != nil {
		l.s.log.Error().Err(err).Msg("epoll_wait failed; the loop stops and closes its connections")
		l.stopListening()
		l.closeAll(errShutdown)
	}
}

// sweepEvery is how often deadlines are checked: a quarter of the shortest timeout, from
// 5 ms to 250 ms.
func (l *loop) sweepEvery() time.Duration {
	d := min(l.s.cfg.SniffTimeout, l.s.cfg.ConnectTimeout)
	if l.s.cfg.IdleTimeout > 0 {
		d = min(d, l.s.cfg.IdleTimeout)
	}
	return min(max(d/4, 5*time.Millisecond), 250*time.Millisecond)
}

// sweep enforces deadlines: sniff, connect, refuse and idle timeouts, and accept back-off.
func (l *loop) sweep() {
	next := l.sweepEvery()
	if l.backoff > 0 {
		next = min(next, 5*time.Millisecond) // accept back-off starts at 5 ms
	}
	l.nextSweep = l.now + int64(next)
	l.resumeAccepts()
	if l.now >= l.nextTrim {
		l.nextTrim = l.now + trimEvery
		l.trimHeads()
		l.s.pipes.trim(l.now)
	}
	idle := int64(l.s.cfg.IdleTimeout)
	for _, c := range l.slots {
		switch {
		case c == nil:
		case c.phase == splicing:
			// A head held for the session store is not idle: the store's own timeout bounds it.
			if idle > 0 && l.now-c.lastActive >= idle && !(c.setup != nil && c.holding) {
				l.idleTimeouts.Add(1)
				l.close(c, errIdle)
			}
		case c.phase == starved && l.now < c.deadline:
			l.dialNext(c) // a descriptor may be free now
		case l.now >= c.deadline:
			l.expire(c)
		}
	}
}

// listen starts accepting from the listener socket lfd.
func (l *loop) listen(lfd int) {
	l.lfds = append(l.lfds, lfd)
	l.watchListener(lfd)
}

func (l *loop) watchListener(lfd int) {
	// EPOLLEXCLUSIVE: a new connection wakes one loop, not all of them.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: listenMark, Pad: int32(lfd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		l.s.log.Error().Err(err).Msg("cannot watch the listener")
	}
}

// stopListening takes the listeners out of the epoll set, so none is used after Shutdown
// closes it.
func (l *loop) stopListening() {
	for _, fd := range l.lfds {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	l.lfds, l.paused = nil, nil
}

func (l *loop) listening(lfd int) bool {
	for _, fd := range l.lfds {
		if fd == lfd {
			return true
		}
	}
	return false
}

// accept takes new connections from lfd. Errors that say the process or the system is out
// of something pause this listener on this loop, with a doubling back-off; errors about one
// connection (it was reset while queued) are skipped.
func (l *loop) accept(lfd int) {
	if !l.listening(lfd) {
		return // an event of the batch that stopListening ended
	}
	for range acceptBatch {
		if l.s.full() {
			l.pauseAccept(lfd, pausedFD{fd: lfd, full: true})
			l.s.limitReached()
			return
		}
		fd, err := accept4(lfd)
		switch {
		case err == nil:
			l.backoff = 0
			l.accepted.Add(1)
			l.s.active.Add(1)
			l.s.conns.Add(1)
			l.start(fd)
			continue
		case err == unix.EAGAIN:
		case err == unix.EINTR, err == unix.ECONNABORTED, err == unix.EPROTO, err == unix.EPERM:
			continue
		default:
			l.backOff(lfd, err)
		}
		return
	}
}

// backOff pauses accepting from lfd after an error that says the process or the system is
// out of something, for 5 ms doubling to 1 s.
func (l *loop) backOff(lfd int, err error) {
	if l.backoff == 0 {
		l.backoff = 5 * time.Millisecond
		l.s.log.Warn().Err(err).Msg("accept failed: pausing accepts, open connections go on")
	} else {
		l.backoff = min(2*l.backoff, time.Second)
	}
	until := l.now + int64(l.backoff)
	l.pauseAccept(lfd, pausedFD{fd: lfd, until: until})
	l.nextSweep = min(l.nextSweep, until)
}

// pauseAccept takes a listener out of the epoll set until resumeAccepts puts it back.
func (l *loop) pauseAccept(lfd int, p pausedFD) {
	sysEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, lfd, nil)
	l.paused = append(l.paused, p)
}

// resumeAccepts watches again the listeners whose back-off is over, and those paused at the
// connection limit once the server is below it.
func (l *loop) resumeAccepts() {
	for i := 0; i < len(l.paused); i++ {
		p := l.paused[i]
		if p.full && l.s.full() || !p.full && l.now < p.until {
			continue
		}
		l.paused = append(l.paused[:i], l.paused[i+1:]...)
		i--
		l.watchListener(p.fd)
		if p.full {
			l.s.limitLeft()
		}
	}
}

// newConn gives a zeroed conn a slot and a generation.
func (l *loop) newConn() *conn {
	var c *conn
	if n := len(l.spare); n > 0 {
		c, l.spare = l.spare[n-1], l.spare[:n-1]
	} else {
		c = new(conn)
	}
	if n := len(l.free); n > 0 {
		c.slot, l.free = l.free[n-1], l.free[:n-1]
	} else {
		c.slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.gen++
	c.gen = l.gen & (1<<31 - 1)
	l.slots[c.slot] = c
	return c
}

// freeConn returns c's slot; c is kept for reuse, zeroed.
func (l *loop) freeConn(c *conn) {
	l.slots[c.slot] = nil
	l.free = append(l.free, c.slot)
	*c = conn{}
	if len(l.spare) < 1024 {
		l.spare = append(l.spare, c)
	}
}

// watch sets the epoll interest of one end of c.
func (l *loop) watch(c *conn, side int, events uint32) error {
	en := &c.ends[side]
	op := unix.EPOLL_CTL_MOD
	if !en.inEpoll {
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: events, Fd: c.slot, Pad: int32(c.gen<<1 | uint32(side))}
	if err := sysEpollCtl(l.epfd, op, en.fd, &ev); err != nil {
		return opError("epoll_ctl", err)
	}
	en.inEpoll, en.events = true, events
	return nil
}

// unwatch takes one end of c out of the epoll set. An interest of 0 is not enough to silence
// a socket: epoll reports EPOLLHUP and EPOLLERR whatever the interest, level-triggered, so an
// end that must not be heard from for a while leaves the set.
func (l *loop) unwatch(c *conn, side int) {
	en := &c.ends[side]
	if en.inEpoll {
		sysEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, en.fd, nil)
	}
	en.inEpoll, en.events = false, 0
}

// connectTo starts connecting a new socket to addr, at the address its name last resolved to,
// which it returns for dialFailed.
func (l *loop) connectTo(addr string) (int, *sockaddr, error) {
	d := l.dialAddrs[addr]
	if d == nil {
		d = l.s.resolver.addr(addr)
		l.dialAddrs[addr] = d
	}
	sa, err := d.dialable()
	if err != nil {
		return -1, nil, err
	}
	fd, err := sysDial(sa)
	return fd, sa, err
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

func (l *loop) hotPipe() (*pipe, error) {
	if l.hot == nil {
		p, err := l.s.pipes.get()
		if err != nil {
			return nil, err
		}
		l.hot = p
	}
	return l.hot, nil
}

// releasePipe takes back the emptied pipe of a flow: it becomes the loop's hot pipe, or goes
// back to the pool if the loop already has one.
func (l *loop) releasePipe(en *end) {
	if l.hot == nil {
		l.hot = en.pipe
	} else {
		l.s.pipes.put(en.pipe)
	}
	en.pipe = nil
}

// closeAll closes every connection of the loop.
func (l *loop) closeAll(why error) {
	for _, c := range l.slots {
		if c != nil {
			l.close(c, why)
		}
	}
}

func (l *loop) stop() {
	l.stopListening()
	l.closeAll(errShutdown)
	l.stopped = true
}

// release closes the loop's descriptors once its goroutine has ended (or never started).
func (l *loop) release() {
	if l.hot != nil {
		l.s.pipes.discard(l.hot)
		l.hot = nil
	}
	l.epoll.Close()
	unix.Close(l.wakefd)
}
