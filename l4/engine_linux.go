package l4

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"lb/httpsniff"
)

// The splice engine moves the bytes of routed connections. Each loop owns an epoll set
// (level-triggered) and the connections registered in it; only the loop's goroutine touches
// a connection after registration, so the data path takes no lock but the slot lookup.
// A connection costs no goroutine and no pipe while idle: bytes go socket → pipe → socket
// with splice(2) through the loop's one "hot" pipe, and a flow keeps a pipe of its own only
// while its destination is full.

const (
	maxEvents  = 256
	pumpRounds = 16      // splice round trips one event may take before other connections get a turn
	pipeSize   = 64 << 10 // Linux's default pipe capacity: what one splice can move
	wakeSlot   = -1       // epoll data of the loop's eventfd
)

var (
	errIdle     = errors.New("idle timeout")
	errPeerGone = errors.New("peer reset or closed")
	errShutdown = errors.New("shutdown deadline")
)

// routeInfo is what the connection's log line needs from routing.
type routeInfo struct {
	backend  string
	sniff    httpsniff.Kind
	sniffErr error
	start    time.Time
}

// end is one socket of a proxied connection, and the flow that reads from it.
type end struct {
	conn    *net.TCPConn
	fd      int
	events  uint32 // epoll interest registered for fd
	pipe    *pipe  // non-nil exactly while pending > 0: bytes read here, not yet written to the other end
	pending int
	eof     bool   // read 0 bytes; the other end has been shut for writing
	moved   uint64 // bytes written to the other end
}

type proxyConn struct {
	ends [2]end // client, backend
	routeInfo
	lastActive int64 // unix nanos of the loop's clock when bytes last moved
	slot       int32
	gen        uint32 // tells a stale epoll event from one for the slot's new tenant
}

type engine struct {
	loops   []*loop
	next    atomic.Uint32
	pipes   pipePool
	idle    time.Duration
	onClose func()
	log     zerolog.Logger

	spliced      atomic.Uint64
	idleTimeouts atomic.Uint64
}

type loop struct {
	e      *engine
	epfd   int
	wakefd int
	wakes  atomic.Uint32 // wakeCloseAll | wakeStop
	done   chan struct{}

	mu      sync.Mutex // guards slots, free, gen and closing: add() runs on routing goroutines
	slots   []*proxyConn
	free    []int32
	gen     uint32
	closing bool

	// Owned by the loop goroutine.
	hot       *pipe
	now       int64
	nextSweep int64
	stale     []*proxyConn
	events    [maxEvents]unix.EpollEvent
}

const (
	wakeCloseAll = 1 << iota
	wakeStop
)

func newEngine(idle time.Duration, onClose func(), log zerolog.Logger) (*engine, error) {
	e := &engine{idle: idle, onClose: onClose, log: log}
	for range runtime.GOMAXPROCS(0) {
		l, err := newLoop(e)
		if err != nil {
			for _, l := range e.loops {
				l.release()
			}
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	for _, l := range e.loops {
		go l.run()
	}
	return e, nil
}

func newLoop(e *engine) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmtErr("epoll_create1", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmtErr("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmtErr("epoll_ctl", err)
	}
	return &loop{e: e, epfd: epfd, wakefd: wakefd, done: make(chan struct{})}, nil
}

func fmtErr(call string, err error) error { return &net.OpError{Op: call, Err: err} }

// add hands a routed connection to one of the loops, which closes it when done.
func (e *engine) add(client, server *net.TCPConn, ri routeInfo) {
	pc := &proxyConn{routeInfo: ri}
	pc.ends[0].conn, pc.ends[1].conn = client, server
	var err error
	if pc.ends[0].fd, err = sysfd(client); err == nil {
		pc.ends[1].fd, err = sysfd(server)
	}
	if err == nil {
		err = e.loops[e.next.Add(1)%uint32(len(e.loops))].add(pc)
	}
	if err != nil {
		client.Close()
		server.Close()
		e.log.Error().Err(err).Msg("splice engine refused a connection")
		e.onClose()
	}
}

func sysfd(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func (l *loop) add(pc *proxyConn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return errShutdown
	}
	if n := len(l.free); n > 0 {
		pc.slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		pc.slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.gen++
	pc.gen = l.gen
	pc.lastActive = time.Now().UnixNano()
	l.slots[pc.slot] = pc
	// Registered under l.mu: the loop cannot look the connection up, and so cannot close it,
	// before both sockets are in the epoll set.
	for side := range pc.ends {
		en := &pc.ends[side]
		en.events = unix.EPOLLIN | unix.EPOLLRDHUP
		ev := pc.event(side, en.events)
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, en.fd, &ev); err != nil {
			l.slots[pc.slot] = nil
			l.free = append(l.free, pc.slot)
			return fmtErr("epoll_ctl", err)
		}
	}
	return nil
}

func (pc *proxyConn) event(side int, events uint32) unix.EpollEvent {
	return unix.EpollEvent{Events: events, Fd: pc.slot, Pad: int32(pc.gen<<1 | uint32(side))}
}

func (l *loop) lookup(slot int32, pad int32) *proxyConn {
	l.mu.Lock()
	pc := l.slots[slot]
	l.mu.Unlock()
	if pc == nil || pc.gen != uint32(pad)>>1 {
		return nil
	}
	return pc
}

func (l *loop) run() {
	defer close(l.done)
	for {
		n, err := unix.EpollWait(l.epfd, l.events[:], l.waitMillis())
		if err != nil && err != unix.EINTR {
			l.e.log.Error().Err(err).Msg("epoll_wait failed; splice loop stops")
			l.closeAll(errShutdown)
			return
		}
		l.now = time.Now().UnixNano()
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			if ev.Fd == wakeSlot {
				if l.wake() {
					return
				}
				continue
			}
			if pc := l.lookup(ev.Fd, ev.Pad); pc != nil {
				l.serve(pc, int(ev.Pad&1), ev.Events)
			}
		}
		if l.e.idle > 0 && l.now >= l.nextSweep {
			l.sweep()
		}
	}
}

// waitMillis bounds epoll_wait so idle connections are swept at about a quarter of the
// idle timeout, between 10 ms and 1 s.
func (l *loop) waitMillis() int {
	if l.e.idle <= 0 {
		return -1
	}
	return int(sweepEvery(l.e.idle) / time.Millisecond)
}

func sweepEvery(idle time.Duration) time.Duration {
	return min(max(idle/4, 10*time.Millisecond), time.Second)
}

// serve handles one epoll event of one end of pc.
func (l *loop) serve(pc *proxyConn, side int, events uint32) {
	if events&unix.EPOLLOUT != 0 && !l.pump(pc, 1-side) {
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		if !pc.ends[side].eof {
			if !l.pump(pc, side) {
				return
			}
		} else if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			// Reading from this end is over and now it cannot be written to either.
			l.close(pc, errPeerGone)
			return
		}
	}
	l.rearm(pc)
}

// pump moves bytes from pc.ends[from] to the other end until the source is drained, the
// destination is full, or the round budget is spent. It returns false if it closed pc.
func (l *loop) pump(pc *proxyConn, from int) bool {
	src, dst := &pc.ends[from], &pc.ends[1-from]
	lastRead := pipeSize
	for range pumpRounds {
		if src.pending > 0 {
			n, err := unix.Splice(src.pipe.r, nil, dst.fd, nil, src.pending, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if err == unix.EAGAIN {
				return true // rearm waits for dst to be writable
			}
			if err != nil {
				l.close(pc, err)
				return false
			}
			src.pending -= int(n)
			src.moved += uint64(n)
			l.e.spliced.Add(uint64(n))
			pc.lastActive = l.now
			if src.pending > 0 {
				continue
			}
			l.releasePipe(src)
			if lastRead < pipeSize {
				return true // a short read means the socket was drained; epoll says if more came
			}
			continue
		}
		if src.eof {
			return true
		}
		p, err := l.hotPipe()
		if err != nil {
			l.close(pc, err)
			return false
		}
		n, err := unix.Splice(src.fd, nil, p.w, nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if err == unix.EAGAIN {
			return true
		}
		if err != nil {
			l.close(pc, err)
			return false
		}
		if n == 0 {
			src.eof = true
			if dst.eof {
				l.close(pc, nil) // both directions are done
				return false
			}
			// Pass the half-close on: the other direction goes on until its own EOF.
			unix.Shutdown(dst.fd, unix.SHUT_WR)
			return true
		}
		l.hot = nil
		src.pipe, src.pending = p, int(n)
		lastRead = int(n)
	}
	return true
}

// rearm makes each socket's epoll interest match what its flows wait for: readable when its
// own flow can take bytes, writable when the other flow has bytes stuck for it.
func (l *loop) rearm(pc *proxyConn) {
	for side := range pc.ends {
		en, other := &pc.ends[side], &pc.ends[1-side]
		var want uint32
		if !en.eof && en.pending == 0 {
			want |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if other.pending > 0 {
			want |= unix.EPOLLOUT
		}
		if want == en.events {
			continue
		}
		ev := pc.event(side, want)
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, en.fd, &ev); err != nil {
			l.close(pc, fmtErr("epoll_ctl", err))
			return
		}
		en.events = want
	}
}

func (l *loop) hotPipe() (*pipe, error) {
	if l.hot == nil {
		p, err := l.e.pipes.get()
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
		l.e.pipes.put(en.pipe)
	}
	en.pipe = nil
}

// close closes both sockets of pc; err nil means both directions ended cleanly.
func (l *loop) close(pc *proxyConn, err error) {
	l.mu.Lock()
	l.slots[pc.slot] = nil
	l.free = append(l.free, pc.slot)
	l.mu.Unlock()
	for i := range pc.ends {
		en := &pc.ends[i]
		if en.pipe != nil {
			l.e.pipes.discard(en.pipe) // it holds bytes nobody will read
			en.pipe = nil
		}
		en.conn.Close()
	}
	if e := l.e.log.Debug(); e.Enabled() {
		e.Err(err).
			Stringer("client", pc.ends[0].conn.RemoteAddr()).
			Str("backend", pc.backend).
			Stringer("sniff", pc.sniff).
			AnErr("sniff_error", pc.sniffErr).
			Uint64("bytes_up", pc.ends[0].moved).
			Uint64("bytes_down", pc.ends[1].moved).
			Dur("duration", time.Since(pc.start)).
			Msg("connection closed")
	}
	l.e.onClose()
}

func (l *loop) sweep() {
	l.nextSweep = l.now + int64(sweepEvery(l.e.idle))
	oldest := l.now - int64(l.e.idle)
	l.stale = l.stale[:0]
	l.mu.Lock()
	for _, pc := range l.slots {
		if pc != nil && pc.lastActive < oldest {
			l.stale = append(l.stale, pc)
		}
	}
	l.mu.Unlock()
	for _, pc := range l.stale {
		l.e.idleTimeouts.Add(1)
		l.close(pc, errIdle)
	}
	clear(l.stale)
}

// closeAll closes every connection of the loop and refuses new ones.
func (l *loop) closeAll(why error) {
	l.mu.Lock()
	l.closing = true
	l.stale = l.stale[:0]
	for _, pc := range l.slots {
		if pc != nil {
			l.stale = append(l.stale, pc)
		}
	}
	l.mu.Unlock()
	for _, pc := range l.stale {
		l.close(pc, why)
	}
	clear(l.stale)
}

// wake handles the commands posted by closeAll and stop; true means stop the loop.
func (l *loop) wake() bool {
	var buf [8]byte
	unix.Read(l.wakefd, buf[:])
	cmd := l.wakes.Swap(0)
	if cmd&(wakeCloseAll|wakeStop) != 0 {
		l.closeAll(errShutdown)
	}
	return cmd&wakeStop != 0
}

func (l *loop) post(cmd uint32) {
	l.wakes.Or(cmd)
	one := [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

// closeAll cuts every routed connection; later hand-overs are closed at once.
func (e *engine) closeAll() {
	for _, l := range e.loops {
		l.post(wakeCloseAll)
	}
}

// stop closes every connection, stops the loops and releases their descriptors.
func (e *engine) stop() {
	for _, l := range e.loops {
		l.post(wakeStop)
	}
	for _, l := range e.loops {
		<-l.done
		l.release()
	}
	e.pipes.drain()
}

// release closes the loop's descriptors once its goroutine has ended (or never started).
func (l *loop) release() {
	if l.hot != nil {
		l.e.pipes.discard(l.hot)
		l.hot = nil
	}
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

func (e *engine) stats() Stats {
	return Stats{
		SplicedBytes: e.spliced.Load(),
		PipesInUse:   e.pipes.inUse.Load(),
		IdleTimeouts: e.idleTimeouts.Load(),
	}
}
