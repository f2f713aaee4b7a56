//go:build linux

package l4

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"lb/httpsniff"
	"lb/ring"
)

// The life of one connection, top to bottom, all on its loop:
//
//	start → sniff (read the head into a pooled buffer) → route (next backend up) →
//	connect (non-blocking) → connected → replay the peeked bytes → splice both ways → close
//
// with refuse (503/502) when no backend can be had, and deadlines enforced by the loop's
// sweep (expire).

type phase uint8

const (
	sniffing   phase = iota // reading the first bytes
	lookingUp               // the session store is asked where the request's session lives
	connecting              // a backend dial is in progress
	splicing                // bytes flow both ways
	refusing                // a 503/502 was sent; reading until the client closes
	starved                 // lb had no descriptor for the backend socket: dialed again each sweep
)

const (
	client  = 0
	backend = 1

	pumpRounds = 16       // reads one event may take before other connections get a turn
	pipeSize   = 64 << 10 // Linux's default pipe capacity: what one splice can move
	copySize   = 16 << 10 // a read that fills the loop's copy buffer makes a flow bulk
	refuseWait = time.Second
)

var (
	errNoneUp       = errors.New("no backend is up")
	errDialFailed   = errors.New("every backend dial failed")
	errNoDescriptor = errors.New("no descriptor for the backend socket in time")
	errHeadMemory   = errors.New("head buffers at their memory bound: routed with what came")
	errPipeShort    = errors.New("pipe took less than a read it was sized for")
)

// Answers to an HTTP client that cannot be routed. Connection: close because lb does not
// parse the requests that may follow on the connection.
var (
	answer503     = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 17\r\nConnection: close\r\n\r\nno backend is up\n")
	answer502     = []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 33\r\nConnection: close\r\n\r\nno backend accepted a connection\n")
	answer503Busy = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 26\r\nConnection: close\r\n\r\nlb is out of descriptors\n")
)

// end is one socket of a connection, and the flow that reads from it.
type end struct {
	fd      int
	inEpoll bool
	events  uint32 // epoll interest registered for fd
	eof     bool   // read 0 bytes; the other end has been shut for writing
	pipe    *pipe  // non-nil exactly while pending > 0: bytes read here, not yet written to the other end
	pending int
	blocked bool   // copied without a pipe, the other end took less than was peeked: wait for it
	bulk    bool   // the last read filled the copy buffer: splice the next one
	moved   uint64 // bytes written to the other end
}

type conn struct {
	ends       [2]end
	phase      phase
	slot       int32
	gen        uint32 // tells a stale epoll event from one for the slot's new tenant
	deadline   int64  // unix nanos: when sniffing, connecting or refusing gives up
	lastActive int64  // unix nanos: when bytes last moved (splicing)
	start      int64
	backend    ring.Backend
	kind       httpsniff.Kind
	sniffErr   error  // why sniffing ended without a decision, if it did
	peer       string // the client's address, read at accept for the debug line only
	*setup            // only until splicing starts
}

// setup is what routing needs and splicing does not; pooled, its buffer kept by the loop.
type setup struct {
	buf       []byte // a head buffer (headbuf.go), grown to what came
	n         int    // bytes read into buf
	written   int    // of those, bytes replayed to the backend
	parser    httpsniff.Parser
	cursor    ring.Cursor
	dialed    bool         // a dial was tried: 502 rather than 503 if none works
	dialedTo  *sockaddr    // where the dial under way goes
	retry     ring.Backend // the backend to dial again once lb has a descriptor (starved)
	connected bool

	// Sticky sessions (sticky.go, session.go).
	head       httpsniff.Head // the first request head, when it parsed
	stickTo    ring.Backend   // the backend the request's cookie or session names, if up
	byCookie   bool           // stickTo comes from lb's own cookie
	stickTried bool
	setCookie  bool                     // insert the sticky cookie into the first final response
	learn      bool                     // record the session cookie the first final response sets
	holding    bool                     // that response waits for the session store to record it
	resp       httpsniff.ResponseParser // the head at the start of buf (interims sent are gone from it)
	sent       int                      // bytes of buf written to the client
	interim    int                      // length of the interim head at the start of buf being written
	flushing   bool                     // the client took part of buf: the rest when it is writable
}

// holdsBackend reports whether the backend must not be read: the response head it sent waits
// for the session store or for the client.
func (st *setup) holdsBackend() bool { return st != nil && (st.holding || st.flushing) }

// readsResponse reports whether lb reads the first response head itself (pumpHead).
func (st *setup) readsResponse() bool { return st.setCookie || st.learn }

// start takes a freshly accepted socket.
func (l *loop) start(fd int) {
	c := l.newConn()
	c.ends[client].fd, c.ends[backend].fd = fd, -1
	c.start = l.now
	if l.s.log.GetLevel() <= zerolog.DebugLevel && zerolog.GlobalLevel() <= zerolog.DebugLevel {
		// Now: once lb has shut its side and the client closes, the socket is in TIME_WAIT
		// and getpeername fails.
		c.peer = peerName(fd)
	}
	c.deadline = l.now + int64(l.s.cfg.SniffTimeout)
	// The request usually follows the handshake at once: try to read it before asking epoll.
	l.sniff(c)
}

// sniff reads what the client sent so far and routes once the head is decided, the buffer
// is full or the client half-closed. A head that is malformed, too large or never complete
// is routed all the same: its bytes go through untouched.
func (l *loop) sniff(c *conn) {
	st := c.setup
	if st == nil {
		st = l.s.setups.Get().(*setup) // kept once bytes come: a silent client holds none
	}
	n, err := l.readHead(st, c.ends[client].fd, l.s.cfg.MaxHeaderBytes)
	if c.setup == nil && n > 0 {
		c.setup = st
	}
	held := c.setup != nil // bytes came, now or before
	if !held {
		l.s.setups.Put(st) // not touched again below
	}
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		l.watchOrClose(c, client, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLONESHOT)
		return
	case errors.Is(err, errHeadMemory):
		c.sniffErr = err // the rest of the head goes through unread, unparsed
		l.route(c)
		return
	case err != nil:
		l.close(c, err)
		return
	case n == 0 && !held:
		l.close(c, nil) // closed before saying anything
		return
	case n == 0:
		c.sniffErr = io.EOF // half-closed after a partial head: it still gets its answer
		l.route(c)
		return
	}
	st.n += n
	head, err := st.parser.Parse(st.buf[:st.n])
	switch {
	case err == httpsniff.ErrNeedMore && st.n < l.s.cfg.MaxHeaderBytes:
		l.watchOrClose(c, client, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLONESHOT)
		return
	case err == httpsniff.ErrNeedMore:
		err = httpsniff.ErrHeadTooLarge
	}
	c.kind, c.head, c.sniffErr = head.Kind, head, err
	l.route(c)
}

// route starts dialing: the backend the request's cookie or session names, else the ring's
// next. Nothing more is read from the client until the backend is connected: its ONESHOT
// interest is spent or disarmed, or it was never watched (the head came in the first read).
func (l *loop) route(c *conn) {
	if c.setup == nil {
		c.setup = l.s.setups.Get().(*setup) // a client that has sent nothing yet
	}
	c.cursor = l.s.cfg.Ring.Cursor()
	if l.chooseSticky(c) {
		return // lookupSession dials once the store has answered
	}
	l.dialNext(c)
}

// dialNext tries the sticky backend, then those left on the cursor: nothing was sent yet,
// so any will do.
func (l *loop) dialNext(c *conn) {
	for b, ok := c.nextBackend(); ok; b, ok = c.nextBackend() {
		fd, sa, err := l.connectTo(b.Addr)
		switch {
		case errors.Is(err, errUnresolved):
			continue // a name whose first lookup is under way: not a failed dial, so health is not told
		case ownShortage(err):
			l.starve(c, b, err)
			return
		case err == nil:
			l.s.endShortage()
		}
		c.dialed = true
		if err != nil {
			l.dialFailed(b, sa, err)
			continue
		}
		c.dialedTo = sa
		c.backend, c.phase, c.connected = b, connecting, false
		c.ends[backend] = end{fd: fd}
		c.deadline = l.now + int64(l.s.cfg.ConnectTimeout)
		if c.n == 0 {
			l.watchOrClose(c, backend, unix.EPOLLOUT) // nothing to write: wait for the connect
		} else {
			// On loopback and fast networks the handshake is often done when connect
			// returns: write at once, and wait for writability only if the socket says so.
			l.replay(c)
		}
		return
	}
	why := errNoneUp
	if c.dialed {
		why = errDialFailed
	}
	l.refuse(c, why)
}

// ownShortage reports whether a dial failed for want of lb's own resources: descriptors,
// socket memory, local ports. That says nothing of the backend.
func ownShortage(err error) bool {
	for _, errno := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EADDRNOTAVAIL} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// starve parks c until lb has a descriptor for the socket to b. Health is not told and no
// other backend is tried: the shortage is lb's, and every dial would meet it. The sweep dials
// b again; a client still waiting after ConnectTimeout is refused (errNoDescriptor).
func (l *loop) starve(c *conn, b ring.Backend, err error) {
	if c.phase != starved {
		c.phase, c.deadline = starved, l.now+int64(l.s.cfg.ConnectTimeout)
	}
	c.retry = b
	l.s.startShortage(err)
}

// dialFailed reports a failed dial of b, at sa if the connect was started.
func (l *loop) dialFailed(b ring.Backend, sa *sockaddr, err error) {
	if sa != nil {
		l.s.resolver.dialFailed(l.dialAddrs[b.Addr], sa)
	}
	if e := l.s.log.Debug(); e.Enabled() {
		e.Err(err).Str("backend", b.ID).Str("addr", b.Addr).Msg("dial failed, trying the next backend")
	}
	if l.s.cfg.OnDialFailure != nil {
		l.s.cfg.OnDialFailure(b)
	}
}

// connected runs when the backend socket is writable: the dial succeeded or failed.
func (l *loop) connected(c *conn) {
	if !c.connected {
		if err := sysSocketError(c.ends[backend].fd); err != nil {
			if c.written > 0 {
				// The backend took part of the replay before it failed: no other backend may
				// be given the rest of the stream.
				l.close(c, opError("write", err))
				return
			}
			l.redial(c, err)
			return
		}
		c.connected = true
	}
	l.replay(c)
}

// redial gives up on the backend being dialed and tries the next one.
func (l *loop) redial(c *conn, err error) {
	sysClose(c.ends[backend].fd) // also leaves the epoll set
	c.ends[backend] = end{fd: -1}
	l.dialFailed(c.backend, c.dialedTo, opError("connect", err))
	l.dialNext(c)
}

// replay writes the peeked bytes to the backend before any other byte, then starts
// splicing. They fit an empty send buffer but for a huge --max-header-bytes; the rest then
// waits for writability. A write that fails before the connect is known to have worked
// (ECONNREFUSED) fails the dial, and nothing reached the backend.
func (l *loop) replay(c *conn) {
	st := c.setup
	for st.written < st.n {
		n, err := sysWrite(c.ends[backend].fd, st.buf[st.written:st.n])
		if err == unix.EAGAIN {
			if c.ends[backend].events != unix.EPOLLOUT {
				l.watchOrClose(c, backend, unix.EPOLLOUT)
			}
			return
		}
		if err != nil && !c.connected && st.written == 0 {
			l.redial(c, err)
			return
		}
		if err != nil {
			l.close(c, err)
			return
		}
		st.written += n
		l.moved(c, &c.ends[client], n, false) // the peeked bytes count toward bytes_up too
		c.connected = true                    // it took bytes: whatever fails now fails the connection, not the dial
	}
	if st.readsResponse() {
		st.n = 0 // the buffer now takes the response head (pumpHead)
	} else {
		l.putSetup(st)
		c.setup = nil
	}
	c.phase, c.lastActive = splicing, l.now
	if l.watchOrClose(c, client, unix.EPOLLIN|unix.EPOLLRDHUP) {
		l.watchOrClose(c, backend, unix.EPOLLIN|unix.EPOLLRDHUP)
	}
}

// handle dispatches one epoll event for one end of c.
func (l *loop) handle(c *conn, side int, events uint32) {
	switch c.phase {
	case sniffing:
		c.ends[client].events = 0 // ONESHOT: spent
		l.sniff(c)
	case lookingUp, starved: // nothing is watched meanwhile
	case connecting:
		if side == backend {
			l.connected(c)
		}
	case refusing:
		l.drainRefused(c)
	case splicing:
		l.splice(c, side, events)
	}
}

// expire is the sweep's verdict on a connection whose deadline passed.
func (l *loop) expire(c *conn) {
	switch c.phase {
	case sniffing:
		if l.s.cfg.CloseSlowHeads {
			l.s.closedSlow.Add(1)
			l.close(c, os.ErrDeadlineExceeded)
			return
		}
		// Slow, silent (a pre-connect, a server-speaks-first protocol) or incomplete: route
		// with what came. The client's ONESHOT interest may still be armed; disarm it, out of
		// the set: with no interest it would still report a reset, unheeded while connecting.
		l.unwatch(c, client)
		c.sniffErr = os.ErrDeadlineExceeded
		l.route(c)
	case lookingUp:
		l.dialNext(c) // the store did not answer in time: as if it knew nothing
	case starved:
		l.refuse(c, errNoDescriptor)
	case connecting:
		if c.written > 0 {
			// The backend took part of the replay and no more in time: the bytes it has
			// cannot be taken back, so no other backend can be given the stream.
			l.close(c, opError("write", os.ErrDeadlineExceeded))
			return
		}
		sysClose(c.ends[backend].fd)
		c.ends[backend] = end{fd: -1}
		l.dialFailed(c.backend, c.dialedTo, opError("connect", os.ErrDeadlineExceeded))
		l.dialNext(c)
	case refusing:
		l.close(c, nil)
	}
}

// refuse answers an unroutable HTTP client with 503 or 502 and then reads what it sends
// until it closes (or refuseWait passes), because closing a socket with unread input sends
// RST, which can destroy the answer in flight. Other clients are closed at once.
func (l *loop) refuse(c *conn, why error) {
	if e := l.s.log.Debug(); e.Enabled() { // debug: an outage must not log once per connection
		e.Err(why).Stringer("sniff", c.kind).Msg("connection not routed")
	}
	// A client whose head is partial (sniff timeout), oversized or malformed still speaks
	// HTTP if it began like a request, and understands the answer.
	if c.kind != httpsniff.KindHTTP1 && !httpsniff.StartsLikeHTTP1(c.buf[:c.n]) {
		l.close(c, why)
		return
	}
	var answer []byte
	switch why {
	case errDialFailed:
		answer = answer502
		l.s.refusedDial.Add(1)
	case errNoDescriptor:
		answer = answer503Busy
		l.s.refusedBusy.Add(1)
	default:
		answer = answer503
		l.s.refusedNoneUp.Add(1)
	}
	fd := c.ends[client].fd
	sysWrite(fd, answer) // fits an empty send buffer
	sysShutdownWrite(fd)
	l.putSetup(c.setup)
	c.setup = nil
	c.phase, c.deadline = refusing, l.now+int64(refuseWait)
	l.watchOrClose(c, client, unix.EPOLLIN|unix.EPOLLRDHUP)
}

func (l *loop) drainRefused(c *conn) {
	var buf [512]byte
	for range 16 {
		n, err := sysRead(c.ends[client].fd, buf[:])
		if err == unix.EAGAIN {
			return
		}
		if n == 0 || err != nil {
			l.close(c, nil)
			return
		}
	}
}

// splice handles an event of a routed connection: bytes to move, or an end gone.
func (l *loop) splice(c *conn, side int, events uint32) {
	if events&unix.EPOLLOUT != 0 && !l.pump(c, 1-side, false) {
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		if !c.ends[side].eof {
			// RDHUP without ERR: the peer's FIN is in, and so is every byte it sent before it.
			// (A reset also reports RDHUP, with ERR; its bytes are read and its error found as
			// before, over more rounds.)
			if !l.pump(c, side, events&(unix.EPOLLRDHUP|unix.EPOLLERR) == unix.EPOLLRDHUP) {
				return
			}
		} else if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			// Reading from this end is over and now it cannot be written to either.
			l.close(c, errPeerGone)
			return
		}
	}
	l.rearm(c)
}

// pump moves bytes from c.ends[from] to the other end until the source is drained, the
// destination is full, or the round budget is spent. Small reads are copied through the
// loop's buffer (for a few hundred bytes, read+write costs the kernel less than splicing
// through a pipe); once a read fills that buffer the flow is bulk and goes socket → pipe →
// socket with splice, zero-copy, until a read comes up short. Bytes the destination cannot
// take yet wait in a pipe that the flow holds until they are written. hup says the source's
// FIN is in, so it is read on to the EOF now rather than after another epoll round, and what
// a short read took waits to leave with the FIN.
// pump returns false if it closed c.
func (l *loop) pump(c *conn, from int, hup bool) bool {
	if from == backend && c.setup != nil {
		return l.pumpHead(c, hup) // the first response head, for the sticky cookie
	}
	src, dst := &c.ends[from], &c.ends[1-from]
	src.blocked = false // dst is writable, or the flow goes on from src
	took := false       // bytes were read from src in this call
	for range pumpRounds {
		if src.pending > 0 {
			n, err := sysSplice(src.pipe.r, dst.fd, src.pending)
			if err == unix.EAGAIN {
				return true // rearm waits for dst to be writable
			}
			if err != nil {
				l.close(c, err)
				return false
			}
			src.pending -= n
			l.moved(c, src, n, true)
			if src.pending > 0 {
				continue
			}
			l.releasePipe(src)
			if !src.bulk && !hup {
				return true // the read was short: the socket is drained; epoll says if more came
			}
			continue
		}
		if src.eof {
			return true
		}
		p, perr := l.hotPipe()
		if perr != nil && !ownShortage(perr) {
			l.close(c, perr)
			return false
		}
		if p == nil {
			// No descriptor for a pipe: copy what dst takes, and leave the rest in src.
			l.s.startShortage(perr)
			return l.copyWithoutPipe(c, src, dst, hup)
		}
		var n int
		var err error
		read := !src.bulk
		if src.bulk {
			if n, err = sysSplice(src.fd, p.w, pipeSize); n > 0 {
				took = true
				l.hot = nil
				src.pipe, src.pending, src.bulk = p, n, n >= len(l.buf)
				continue // written at the top of the loop
			}
			// At TCP's urgent mark splice moves nothing: it returns 0 as if at the EOF, or
			// EAGAIN while epoll goes on reporting data. A read steps over the urgent byte.
			read = err == nil || err == unix.EAGAIN && !took
		}
		// The rest of a short write goes into the hot pipe: read no more than it holds, and
		// nothing without one.
		limit := min(len(l.buf), p.size)
		if read {
			n, err = sysRead(src.fd, l.buf[:limit])
			took = took || n > 0
		}
		if ended, open := l.readEnded(c, src, dst, n, err); ended {
			return open
		}
		src.bulk = n == len(l.buf)
		// A short read after the source's FIN came in took its last bytes, or stopped at an
		// urgent mark. Sent with MSG_MORE they wait for what the next round reads: the EOF,
		// whose FIN passEOF adds to the same segment (the peer is woken once and ACKs once),
		// or the bytes after the mark, whose write pushes them.
		last := hup && n < limit
		var w int
		if last {
			w, err = sysSendMore(dst.fd, l.buf[:n])
		} else {
			w, err = sysWrite(dst.fd, l.buf[:n])
		}
		if err != nil && err != unix.EAGAIN {
			l.close(c, err)
			return false
		}
		w = max(w, 0)
		l.moved(c, src, w, false)
		if w < n {
			// dst is full: keep the rest in the hot pipe, which the read was sized to, until
			// dst is writable.
			if m, perr := sysWrite(p.w, l.buf[w:n]); perr != nil || m < n-w {
				l.close(c, errors.Join(errPipeShort, perr))
				return false
			}
			l.hot = nil
			src.pipe, src.pending = p, n-w
			return true
		}
		if !src.bulk && !hup {
			return true
		}
	}
	return true
}

// copyWithoutPipe moves bytes from src to dst when lb has no descriptor for a pipe: it peeks
// at what src holds, writes it, and takes from src only what dst took, so nothing is held
// in lb. When dst is full, the flow waits for it (blocked) with the bytes still in src.
// It returns false if it closed c.
func (l *loop) copyWithoutPipe(c *conn, src, dst *end, hup bool) bool {
	for range pumpRounds {
		n, err := sysPeek(src.fd, l.buf)
		if ended, open := l.readEnded(c, src, dst, n, err); ended {
			return open
		}
		w, err := sysWrite(dst.fd, l.buf[:n])
		if err != nil && err != unix.EAGAIN {
			l.close(c, err)
			return false
		}
		w = max(w, 0)
		if err := sysDiscard(src.fd, w); err != nil {
			l.close(c, err)
			return false
		}
		l.moved(c, src, w, false)
		if w < n {
			src.blocked = true
			return true
		}
		if n < len(l.buf) && !hup {
			return true
		}
	}
	return true
}

// readEnded deals with a read from src that brought no bytes: none there yet (EAGAIN), an
// error (c is closed), or the EOF (passEOF). It reports whether the read ended the pump, and
// what pump returns then.
func (l *loop) readEnded(c *conn, src, dst *end, n int, err error) (ended, open bool) {
	switch {
	case err == unix.EAGAIN:
		return true, true
	case err != nil:
		l.close(c, err)
		return true, false
	case n == 0:
		return true, l.passEOF(c, src, dst)
	}
	return false, true
}

// passEOF ends the flow from src, which has read its EOF: the half-close goes on to dst, and
// the other direction goes on until its own EOF. False if that was done too and c is closed.
func (l *loop) passEOF(c *conn, src, dst *end) bool {
	src.eof = true
	if dst.eof {
		l.close(c, nil) // both directions are done
		return false
	}
	sysShutdownWrite(dst.fd)
	return true
}

func (l *loop) moved(c *conn, src *end, n int, spliced bool) {
	src.moved += uint64(n)
	if spliced {
		l.spliced.Add(uint64(n))
	}
	c.lastActive = l.now
}

// rearm makes each socket's epoll interest match what its flows wait for: readable when its
// own flow can take bytes, writable when the other flow has bytes stuck for it.
func (l *loop) rearm(c *conn) {
	for side := range c.ends {
		en, other := &c.ends[side], &c.ends[1-side]
		var want uint32
		if !en.eof && en.pending == 0 && !en.blocked && !(side == backend && c.setup.holdsBackend()) {
			want |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if other.pending > 0 || other.blocked || side == client && c.setup != nil && c.flushing {
			want |= unix.EPOLLOUT
		}
		switch {
		case want == 0 && !en.eof:
			// Stalled: its flow waits for the other socket. A hang-up or error here would be
			// reported on every wait meanwhile; the reads that follow the stall find it.
			l.unwatch(c, side)
		case want != en.events || !en.inEpoll:
			// An end at EOF stays in the set, even with no interest, to hear of its peer's reset.
			if !l.watchOrClose(c, side, want) {
				return
			}
		}
	}
}

// watchOrClose sets an end's epoll interest, closing c if that fails; false if it closed c.
func (l *loop) watchOrClose(c *conn, side int, events uint32) bool {
	if err := l.watch(c, side, events); err != nil {
		l.close(c, err)
		return false
	}
	return true
}

// peerName is the address of a socket's peer, for debug logs only: reading it allocates.
func peerName(fd int) string {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return "?"
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return "?"
}

// aborted reports whether a connection ends because a peer reset it, or went away
// without closing (a write that found it gone, a keep-alive that timed out): the other
// peer is then reset too, so a cut transfer reads as cut, not as a clean end.
func aborted(err error) bool {
	if err == nil {
		return false // the usual close: both directions ended
	}
	for _, errno := range []unix.Errno{unix.ECONNRESET, unix.EPIPE, unix.ETIMEDOUT, unix.EHOSTUNREACH, unix.ENETUNREACH} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return errors.Is(err, errPeerGone)
}

// close closes both sockets of c; err nil means both directions ended cleanly. After an
// abort (see aborted) it resets them rather than closing them with a FIN.
func (l *loop) close(c *conn, err error) {
	logLine := l.s.log.Debug()
	abort := aborted(err)
	for i := range c.ends {
		en := &c.ends[i]
		if en.pipe != nil {
			l.s.pipes.discard(en.pipe) // it holds bytes nobody will read
		}
		if en.fd >= 0 {
			if abort {
				sysResetOnClose(en.fd)
			}
			sysClose(en.fd) // also leaves the epoll set
		}
	}
	if c.setup != nil {
		l.putSetup(c.setup)
	}
	if logLine.Enabled() {
		logLine.Err(err).
			Str("client", c.peer).
			Str("backend", c.backend.ID).
			Stringer("sniff", c.kind).
			AnErr("sniff_error", c.sniffErr).
			Uint64("bytes_up", c.ends[client].moved).
			Uint64("bytes_down", c.ends[backend].moved).
			Dur("duration", time.Duration(l.now-c.start)).
			Msg("connection closed")
	}
	l.freeConn(c)
	l.s.active.Add(-1)
	l.s.conns.Done()
	if len(l.paused) > 0 {
		l.resumeAccepts() // room for the next client, if the limit paused accepting
	}
}
