//go:build linux

package l4

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"lb/admit"
	"lb/httpsniff"
	"lb/metrics"
	"lb/proxyhdr"
	"lb/ring"
)

// The life of one connection, top to bottom, in its stages: admit, sniff, route, dial,
// replay, splice (pump.go), close. Each stage runs on the connection's loop and ends by
// entering the phase in which the connection waits (phase.go), or by calling the next stage.
// Errors from raw system calls are bare unix.Errno values, compared with ==; lb's own
// sentinels with errors.Is.

const (
	clientSide  = 0
	backendSide = 1

	refuseWait = time.Second
)

var (
	errNoneUp       = errors.New("no backend is up")
	errQueueTimeout = errors.New("every backend up stayed at its maxconn for --queue-timeout")
	errDialFailed   = errors.New("every backend dial failed")
	errNoDescriptor = errors.New("no descriptor for the backend socket in time")
	errOverLimit    = errors.New("over a per-address limit")
	errHeadMemory   = errors.New("head buffers at their memory bound: routed with what came")
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
	watched bool   // in the epoll set, or a poll armed
	events  uint32 // epoll interest registered for fd
	eof     bool   // read 0 bytes; the other end has been shut for writing
	pipe    *pipe  // non-nil exactly while pending > 0: bytes read here, not yet written to the other end
	pending int
	blocked bool   // copied without a pipe, the other end took less than was peeked: wait for it
	bulk    bool   // the last read filled the copy buffer: splice the next one
	moved   uint64 // bytes written to the other end
	carried uint64 // of moved, those the process that handed c over moved (Adopt): counted there

	// The io_uring engine's (uring_linux.go).
	seq  uint16 // the poll armed now: a completion of an earlier one is stale
	op   uint8  // the request under way on the flow from this end: a receive or a send
	bid  uint16 // the provided buffer holding the flow's bytes while they are sent (pending)
	sent int    // of that buffer's bytes, those the other end took
}

type conn struct {
	ends       [2]end
	deadline   int64 // unix nanos: when the phase's deadline passes (not splicing: see lastActive)
	lastActive int64 // unix nanos: when bytes last moved (splicing)
	start      int64
	client     netip.AddrPort // the PROXY header's source, when a trusted balancer sent one
	backend    string         // the id of the backend that took it, or of the one being dialed
	lis        *listener      // the listener that accepted it
	pool       *pool          // the pool its route chose
	active     ring.Active    // its count in its backend's active connections (leastconn, p2c, maxconn)
	rt         *routing       // from the first bytes until they are replayed (or refused)
	rh         *respHead      // while lb reads the backend's first response head (resphead.go)

	// For metrics and the access log (observe.go).
	bc *metrics.BackendCounters  // the backend's counters on this loop, once it took the connection
	lc *metrics.ListenerCounters // its listener's counters on this loop, from admit on

	slot       int32
	gen        uint32 // tells a stale epoll event from one for the slot's new tenant
	retryAfter int32  // with overLimit: the 429's Retry-After
	admitted   bool   // it holds one of its address's connections (per-address limits)
	phase      phase  // written by enter only
	kind       httpsniff.Kind
	awaitProxy bool         // a trusted balancer's PROXY header comes first (pre-sniff)
	quiet      bool         // its flows are held still for a hand-over (io_uring)
	overLimit  admit.Reason // a per-address limit refuses it, once it is known to speak HTTP or not
	sniff      metrics.SniffKind
	sticky     metrics.StickyResult
	stickied   bool // a sticky mode decided (sticky is set)
	firstFIN   int8 // 1 + the side whose EOF came first; 0: none yet
	errSide    int8 // 1 + the side whose error closes the connection; 0: none, or lb's own
}

// routing is what a connection needs from its first bytes until they are replayed: kept by
// the loop between connections, so a spliced connection holds none of it.
type routing struct {
	first     headBuf                 // the client's first bytes
	proxy     [proxyhdr.MaxV1Len]byte // the PROXY header for the backend, sent before them
	proxyLen  int
	written   int // bytes of the PROXY header and the first bytes written to the backend
	parser    httpsniff.Parser
	req       httpsniff.Head // the first request head, when it parsed
	sniffErr  error          // why sniffing ended without a decision, if it did
	hello     httpsniff.ClientHelloParser
	helloOK   bool // the loop's hello is this connection's ClientHello
	cursor    ring.Cursor
	dialed    bool         // a dial was tried: 502 rather than 503 if none works
	dialedTo  *sockaddr    // where the dial under way goes
	addr      string       // the address of the backend being dialed, as configured
	connected bool         // the dial under way is known to have worked
	retry     ring.Backend // the backend to dial again once lb has a descriptor (starved)
	preferred ring.Backend // the backend the request's cookie or session names, if up
	tried     bool         // preferred was dialed
	byCookie  bool         // preferred comes from lb's own cookie
	setCookie bool         // insert the sticky cookie into the first final response
	learn     bool         // record the session cookie the first final response sets
	sticky    metrics.StickyResult
	stickied  bool // a sticky mode decided, as sticky says
}

// admit takes a freshly accepted socket.
func (l *loop) admit(a accepted) {
	c := l.conns.add()
	c.ends[clientSide].fd, c.ends[backendSide].fd = a.fd, -1
	c.start, c.client, c.lis = l.now, a.client, a.lis
	c.lc = l.stats.listener(a.lis)
	c.lc.Accepted++
	c.lc.Active++
	if c.awaitProxy = l.s.cfg.AcceptProxy.Contains(a.client.Addr()); !c.awaitProxy {
		l.admitClient(c)
	}
	// The request usually follows the handshake at once: read it before asking epoll.
	l.sniff(c)
}

// sniff reads what the client sent so far and routes once the head is decided, the buffer
// is full or the client half-closed. A head that is malformed, too large or never complete
// is routed all the same: its bytes go through untouched.
func (l *loop) sniff(c *conn) {
	rt := c.rt
	if rt == nil {
		rt = l.routings.get() // kept once bytes come: a silent client holds none
	}
	limit := l.s.cfg.MaxHeaderBytes
	if c.awaitProxy {
		limit += proxyhdr.MaxV2Payload + 16 // the header, then the head
	}
	n, err := l.readHead(&rt.first, c.ends[clientSide].fd, limit)
	if c.rt == nil && n > 0 {
		c.rt = rt
	}
	held := c.rt != nil // bytes came, now or before
	if !held {
		l.routings.put(rt) // not touched again below
	}
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		l.enter(c, sniffing)
		return
	case c.awaitProxy && (held && n == 0 && err == nil || errors.Is(err, errHeadMemory)):
		l.badProxy(c, proxyhdr.ErrMalformed) // cut short: no client to speak for
		return
	case errors.Is(err, errHeadMemory):
		l.routeUndecided(c, err) // the rest of the head goes through unread, unparsed
		return
	case err != nil:
		l.close(c, err)
		return
	case n == 0 && !held:
		l.close(c, nil) // closed before saying anything
		return
	case n == 0:
		l.routeUndecided(c, io.EOF) // half-closed after a partial head: it still gets its answer
		return
	}
	if c.awaitProxy && !l.preSniff(c) {
		return
	}
	head, err := rt.parser.Parse(rt.first.bytes())
	if errors.Is(err, httpsniff.ErrNeedMore) {
		if rt.first.n < l.s.cfg.MaxHeaderBytes {
			l.enter(c, sniffing)
			return
		}
		err = httpsniff.ErrHeadTooLarge
	}
	if head.Kind == httpsniff.KindTLS && c.lis.routes.Load().needs.Hello && l.readHello(c) {
		l.enter(c, sniffing)
		return
	}
	c.kind, rt.req, rt.sniffErr = head.Kind, head, err
	l.route(c)
}

// routeUndecided routes c on what came, with why sniffing ended without a decision.
func (l *loop) routeUndecided(c *conn, why error) {
	if c.rt == nil {
		c.rt = l.routings.get() // a client that has sent nothing yet
	}
	c.rt.sniffErr = why
	l.route(c)
}

// preSniff takes the PROXY header a trusted balancer sends before its client's bytes out of
// the first bytes: its source is the client from then on (limits, logs, the header lb sends
// on). It returns false when c waits for the rest of the header, or is closed.
func (l *loop) preSniff(c *conn) bool {
	first := &c.rt.first
	h, err := proxyhdr.Parse(first.bytes())
	switch {
	case errors.Is(err, proxyhdr.ErrNeedMore):
		l.enter(c, sniffing)
		return false
	case err != nil:
		l.badProxy(c, err)
		return false
	}
	first.n = copy(first.b, first.b[h.Len:first.n])
	if h.HasAddr() {
		c.client = h.Src
	}
	c.awaitProxy = false
	l.admitClient(c)
	return true
}

// badProxy closes a trusted balancer's connection whose PROXY header is malformed, cut short
// or missing.
func (l *loop) badProxy(c *conn, err error) {
	l.refused(c, metrics.RefuseBadProxy, false)
	l.close(c, err)
}

// admitClient applies the per-address limits to c's client. Over one, c is still sniffed: an
// HTTP client is answered 429 at route, others are closed there.
func (l *loop) admitClient(c *conn) {
	if l.s.admit == nil {
		return // no limits: nothing to count
	}
	tk, v := l.s.admit.Admit(c.client.Addr(), time.Unix(0, l.now))
	c.admitted, c.overLimit, c.retryAfter = tk.Held(), v.Reason, int32(v.RetryAfter)
}

// route chooses where to dial: the backend the request's cookie or session names, else the
// ring's next.
func (l *loop) route(c *conn) {
	if c.rt == nil {
		c.rt = l.routings.get() // a client that has sent nothing yet
	}
	l.sniffed(c)
	if c.overLimit != admit.Allowed {
		l.refuse(c, errOverLimit)
		return
	}
	if c.pool = l.choosePool(c); c.pool == nil {
		l.refuse(c, errNoRoute)
		return
	}
	c.rt.cursor = c.pool.Ring.CursorFor(c.client.Addr())
	if l.chooseSticky(c) {
		return // lookupSession dials once the store has answered
	}
	l.dial(c)
}

// dial tries the preferred backend, then those left on the cursor, until one is connecting
// or has the first bytes: nothing was sent yet, so any will do.
func (l *loop) dial(c *conn) {
	rt := c.rt
	l.ev.settle()
	for b, picked, ok := rt.nextBackend(); ok; b, picked, ok = rt.nextBackend() {
		fd, sa, err := l.dials.connect(b.Addr)
		switch {
		case errors.Is(err, errUnresolved):
			continue // a name whose first lookup is under way: not a failed dial, so health is not told
		case ownShortage(err):
			l.starve(c, b, err)
			return
		case err == nil:
			l.s.endShortage()
		}
		if rt.dialed {
			l.stats.backend(c.pool, b.ID).Retries++
		}
		rt.dialed = true
		if err != nil {
			l.dialFailed(c, b.ID, b.Addr, sa, err)
			continue
		}
		c.backend, rt.dialedTo, rt.connected = b.ID, sa, false
		rt.addr = b.Addr
		c.ends[backendSide] = end{fd: fd}
		if picked {
			c.active = rt.cursor.Start()
		} else {
			c.active = c.pool.Ring.Start(b.ID)
		}
		l.beforeReplay(c, b.Proxy)
		// On loopback and fast networks the handshake is often done when connect returns:
		// write at once, and wait for writability only if the socket says so.
		if err := l.replay(c); err != nil {
			l.dropBackend(c, err)
			continue
		}
		return
	}
	switch {
	case rt.dialed:
		l.refuse(c, errDialFailed)
	case rt.cursor.Full() && c.phase != queued:
		l.enter(c, queued) // every backend up is at its maxconn: wait for a slot
	case c.phase == queued:
		// The sweep tries again until the deadline.
	default:
		l.refuse(c, errNoneUp)
	}
}

// nextBackend is the backend to dial next: one that lb had no descriptor for, then the
// preferred one, then the ring's (picked: the cursor's last).
func (rt *routing) nextBackend() (b ring.Backend, picked, ok bool) {
	if b := rt.retry; b.ID != "" {
		rt.retry = ring.Backend{}
		return b, false, true
	}
	if rt.preferred.ID != "" && !rt.tried {
		rt.tried = true
		return rt.preferred, false, true
	}
	if rt.byCookie {
		rt.setCookie = true // the sticky backend failed: the client is moved and re-cookied
	}
	for b, ok := rt.cursor.Next(); ok; b, ok = rt.cursor.Next() {
		if b.ID != rt.preferred.ID {
			return b, true, true
		}
	}
	return ring.Backend{}, false, false
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
// b again; a client still waiting at the deadline is refused (errNoDescriptor).
func (l *loop) starve(c *conn, b ring.Backend, err error) {
	c.rt.retry = b
	l.enter(c, starved)
	l.s.startShortage(err)
}

// dialed runs when the backend socket is writable: its connect is done, or the rest of the
// first bytes can go.
func (l *loop) dialed(c *conn, _ int, _ uint32) {
	if c.phase == dialing {
		if err := sysSocketError(c.ends[backendSide].fd); err != nil {
			l.redial(c, opError("connect", err))
			return
		}
		c.rt.connected = true
	}
	if err := l.replay(c); err != nil {
		l.redial(c, err)
	}
}

// beforeReplay puts the PROXY header lb sends the backend, if it sends one (its servers-file
// line's proxy=, else the pool's), before the first bytes: replay writes both in one
// system call.
func (l *loop) beforeReplay(c *conn, proxy string) {
	rt := c.rt
	rt.proxyLen = 0
	v := c.pool.SendProxy
	switch proxy {
	case "v1":
		v = proxyhdr.V1
	case "v2":
		v = proxyhdr.V2
	}
	if v != proxyhdr.None {
		rt.proxyLen = len(proxyhdr.Append(rt.proxy[:0], v, c.client, localAddr(c.ends[clientSide].fd)))
	}
}

// replay writes the first bytes to the backend before any other byte, then starts splicing.
// They fit an empty send buffer but for a huge --max-header-bytes; the rest then waits for
// writability. A backend that fails before it took a byte (a refused connect shows up as a
// failed write) can be replaced: replay returns the error, and the caller dials the next.
// Once it took some, the bytes it has cannot be taken back: a failure closes c.
func (l *loop) replay(c *conn) error {
	rt := c.rt
	for rt.written < rt.proxyLen+rt.first.n {
		var n int
		var err error
		if rt.written < rt.proxyLen {
			n, err = sysWritev(c.ends[backendSide].fd, rt.proxy[rt.written:rt.proxyLen], rt.first.bytes())
		} else {
			n, err = sysWrite(c.ends[backendSide].fd, rt.first.b[rt.written-rt.proxyLen:rt.first.n])
		}
		switch {
		case err == unix.EAGAIN && rt.written == 0:
			l.enter(c, dialing)
			return nil
		case err == unix.EAGAIN:
			l.enter(c, replaying)
			return nil
		case err != nil && rt.written == 0:
			return opError("write", err)
		case err != nil:
			l.closeEnd(c, &c.ends[backendSide], err)
			return nil
		}
		head := max(rt.written+n-rt.proxyLen, 0) - max(rt.written-rt.proxyLen, 0)
		rt.written += n
		l.moved(c, &c.ends[clientSide], head, false) // the first bytes count toward bytes_up too; the header does not
	}
	if rt.proxyLen+rt.first.n == 0 && !rt.connected {
		l.enter(c, dialing) // nothing to write: wait for the connect to say how it went
		return nil
	}
	l.handedOver(c)
	if rt.setCookie || rt.learn {
		l.readResponseHead(c)
	}
	c.lastActive = l.now
	l.enter(c, splicing)
	return nil
}

// redial gives up on the backend being dialed and dials the next one.
func (l *loop) redial(c *conn, err error) {
	l.dropBackend(c, err)
	l.dial(c)
}

// dropBackend closes the socket of a backend that failed before it took a byte, and reports
// the failure.
func (l *loop) dropBackend(c *conn, err error) {
	l.ev.closeSocket(c, backendSide)
	c.ends[backendSide] = end{fd: -1}
	c.active.End()
	l.dialFailed(c, c.backend, c.rt.addr, c.rt.dialedTo, err)
}

// dialFailed reports a failed dial of b, at sa if the connect was started.
func (l *loop) dialFailed(c *conn, id, addr string, sa *sockaddr, err error) {
	l.stats.backend(c.pool, id).DialErrors++
	if sa != nil {
		l.dials.failed(addr, sa)
	}
	if e := l.s.log.Debug(); e.Enabled() {
		e.Err(err).Str("backend", id).Str("addr", addr).Msg("dial failed, trying the next backend")
	}
	if f := c.pool.OnDialFailure; f != nil {
		f(ring.Backend{ID: id, Addr: addr})
	}
}

// handle hands an event of one end of c to what its phase does with one (rules).
func (l *loop) handle(c *conn, side int, events uint32) {
	if f := rules[c.phase].event; f != nil {
		f(l, c, side, events)
	}
}

// sniffMore is sniffing's reaction to its client's readability: the one-shot is spent.
func (l *loop) sniffMore(c *conn, _ int, _ uint32) {
	c.ends[clientSide].events = 0
	l.sniff(c)
}

// sniffExpired is sniffing's deadline: a PROXY header that never came whole, a slow head
// closed (CloseSlowHeads), or a head routed with what came.
func (l *loop) sniffExpired(c *conn) {
	if c.awaitProxy {
		l.badProxy(c, proxyhdr.ErrMalformed)
		return
	}
	if l.s.cfg.CloseSlowHeads {
		l.refused(c, metrics.RefuseSlowHead, false)
		l.close(c, os.ErrDeadlineExceeded)
		return
	}
	// Slow, silent (a pre-connect, a server-speaks-first protocol) or incomplete: route
	// with what came.
	l.routeUndecided(c, os.ErrDeadlineExceeded)
}

// storeTimedOut is lookingUp's deadline: the store did not answer in time, as if it knew
// nothing.
func (l *loop) storeTimedOut(c *conn) {
	l.stats.StoreErrors++
	l.dial(c)
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
	reason := metrics.RefuseNoneUp
	switch {
	case errors.Is(why, errDialFailed):
		reason = metrics.RefuseDialFailed
	case errors.Is(why, errNoDescriptor):
		reason = metrics.RefuseNoDescriptor
	case errors.Is(why, errQueueTimeout):
		reason = metrics.RefuseQueueTimeout
	case errors.Is(why, errOverLimit) && c.overLimit == admit.OverRate:
		reason = metrics.RefuseIPRate
	case errors.Is(why, errOverLimit):
		reason = metrics.RefuseIPConns
	case errors.Is(why, errNoRoute):
		reason = metrics.RefuseNoRoute
	}
	http := c.kind == httpsniff.KindHTTP1 || httpsniff.StartsLikeHTTP1(c.rt.first.bytes())
	l.refused(c, reason, http)
	if !http {
		l.close(c, why)
		return
	}
	var answer []byte
	switch reason {
	case metrics.RefuseDialFailed:
		answer = answer502
	case metrics.RefuseNoDescriptor:
		answer = answer503Busy
	case metrics.RefuseIPConns, metrics.RefuseIPRate:
		answer = admit.AppendTooMany(l.scratch.out[:0], int(c.retryAfter))
		l.scratch.out = answer // grown once, reused
	case metrics.RefuseNoRoute:
		answer = c.lis.routes.Load().noMatch
	default:
		answer = answer503
	}
	fd := c.ends[clientSide].fd
	sysWrite(fd, answer) // fits an empty send buffer
	sysShutdownWrite(fd)
	l.enter(c, refusing)
}

func (l *loop) drainRefused(c *conn, _ int, _ uint32) {
	var buf [512]byte
	for range 16 {
		n, err := sysRead(c.ends[clientSide].fd, buf[:])
		if err == unix.EAGAIN {
			return
		}
		if n == 0 || err != nil {
			l.close(c, nil)
			return
		}
	}
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
	l.closing(c, err)
	l.enter(c, closed)
	if c.rh != nil {
		l.putRespHead(c)
	}
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
			l.ev.closeSocket(c, i)
		}
	}
	if e := l.s.log.Debug(); e.Enabled() {
		e.Err(err).
			Stringer("client", c.client).
			Str("backend", c.backend).
			Stringer("sniff", c.sniff).
			Uint64("bytes_up", c.ends[clientSide].moved).
			Uint64("bytes_down", c.ends[backendSide].moved).
			Dur("duration", time.Duration(l.now-c.start)).
			Msg("connection closed")
	}
	l.free(c)
}

// free gives c's slot back, and its place under the connection limit.
func (l *loop) free(c *conn) {
	l.conns.remove(c)
	l.s.active.Add(-1)
	l.s.conns.Done()
	l.acc.roomFreed(l.now) // the limit may have paused accepting
}
