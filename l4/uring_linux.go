package l4

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"lb/uring"
)

// ringEvents is a loop's io_uring engine. Phases that wait for readiness (sniffing, dialing,
// replaying, refusing, and a splicing connection while lb reads its response head or holds
// bytes in a pipe) get it from one-shot polls, armed again after each event when the phase
// still waits for it, which gives epoll's level-triggered events. A splicing connection
// otherwise moves its bytes by completions: each end has a receive waiting, which takes a
// buffer from the loop's provided-buffer ring only when bytes come, and those bytes leave by
// a send from that buffer; the buffer goes back once the send is whole, and the end receives
// again. Every submission and every wait of a turn go in one io_uring_enter.
//
// The ring is set up on the loop's goroutine, locked to its thread (SINGLE_ISSUER,
// DEFER_TASKRUN: completions run when the loop enters, never in between).
type ringEvents struct {
	ring      *uring.Ring
	bufs      *uring.BufRing
	calls     *callQueue
	cqes      [maxEvents]uring.CQE
	listeners []ringListener
	starved   []flowRef // ends whose receive found the buffer ring empty
	returned  bool      // buffers went back this turn: publish them
	closing   []int     // sockets whose close is queued and not yet submitted

	// Ends at EOF whose peer may still reset them: an epoll set with no interest hears only
	// that (an io_uring poll would fire at once, at the FIN it always watches for), and the
	// ring polls the set.
	hangups    int
	hangupPoll bool // the ring's poll of the set is armed
	hungUp     [64]unix.EpollEvent
}

// ringListener is a listener a loop accepts from: a poll for a pending connection is armed
// while want says so.
type ringListener struct {
	fd          int
	seq         uint16 // tells a poll's completion from one of an earlier arming
	want, armed bool
}

// flowRef names one end's flow of a connection, across turns.
type flowRef struct {
	slot int32
	gen  uint32
	side int8
}

const (
	ringEntries = 1024
	briefWait   = int64(time.Millisecond) // see turn
	ringBufSize = 64 << 10                // what one receive takes: a pipe's worth, what one splice moves on the epoll engine
)

// ringBuffers is how many buffers a loop's ring provides: a buffer is held only while its
// bytes are being sent. A test makes it tiny.
var ringBuffers = 256

// What a completion is for, in the low 3 bits of its user data. For a connection's
// requests the rest holds the side (1 bit), a poll's arming or a send's buffer (16 bits), the
// generation (20 bits) and the slot (24 bits); for a listener's poll, its arming and its
// descriptor.
const (
	udWake uint64 = iota + 1
	udListen
	udPoll
	udRecv
	udSend
	udCancel
	udHangup

	genBits = 20
)

// flow ops: what is under way on the flow from an end (end.op).
const (
	opNone uint8 = iota
	opRecv
	opSend
)

func connData(kind uint64, c *conn, side int, extra uint16) uint64 {
	return kind | uint64(side)<<3 | uint64(extra)<<4 | uint64(c.gen&(1<<genBits-1))<<20 | uint64(uint32(c.slot))<<40
}

func newRingEvents(calls *callQueue) *ringEvents { return &ringEvents{calls: calls} }

// start sets the ring up on the loop's thread, which it locks for the loop's life.
func (u *ringEvents) start() error {
	runtime.LockOSThread()
	r, err := uring.New(uring.Options{Entries: ringEntries, Flags: ringFlags})
	if err != nil {
		return fmt.Errorf("l4: a loop's io_uring: %w", err)
	}
	b, err := r.RegisterBufRing(0, ringBuffers, ringBufSize)
	if err != nil {
		r.Close()
		return fmt.Errorf("l4: a loop's buffer ring: %w", err)
	}
	if u.hangups, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		r.Close()
		b.Close()
		return opError("epoll_create1", err)
	}
	u.ring, u.bufs = r, b
	u.armWake()
	for i := range u.listeners {
		if ln := &u.listeners[i]; ln.want {
			u.armListener(ln)
		}
	}
	return nil
}

// sqe hands out a submission entry, submitting what is queued when the ring is full.
func (u *ringEvents) sqe() *uring.SQE {
	for {
		if s := u.ring.GetSQE(); s != nil {
			return s
		}
		u.submit()
	}
}

// submit hands what is queued to the kernel now, without waiting: the closes among it are done.
func (u *ringEvents) submit() {
	if _, err := u.ring.Submit(); err == nil {
		u.closing = u.closing[:0]
	}
}

func (u *ringEvents) cancel(target uint64) {
	s := u.sqe()
	s.PrepCancel(target)
	s.Flags |= uring.SQECQESkipSuccess
	s.UserData = udCancel
}

// turn submits what the last turn queued and waits for completions (or the sweep), in one
// enter, then dispatches them.
func (u *ringEvents) turn(l *loop) error {
	wait := max(l.nextSweep-l.now, int64(time.Microsecond)) // l.now is a dispatch old: the sweep may come that late
	// Under load the next completion is near: wait for it holding the P, which spares a
	// hand-off between threads at each wake-up. Past briefWait the loop waits as a blocked
	// system call, and the runtime gives its P to others.
	n, err := u.ring.WaitCQEsBriefly(u.cqes[:], 1, min(wait, briefWait))
	if err == nil && n == 0 && wait > briefWait {
		n, err = u.ring.WaitCQEsFor(u.cqes[:], 1, wait-briefWait)
	}
	if err != nil {
		return err
	}
	u.closing = u.closing[:0]
	l.now = time.Now().UnixNano()
	for i := range n {
		u.dispatch(l, &u.cqes[i])
	}
	if u.returned {
		u.returned = false
		u.bufs.Publish()
		u.retryStarved(l)
	}
	if l.stopped { // no turn comes after this one: the closes queued go now
		u.submit()
	}
	return nil
}

func (u *ringEvents) dispatch(l *loop, e *uring.CQE) {
	ud := e.UserData
	switch ud & 7 {
	case udWake:
		var buf [8]byte
		unix.Read(u.calls.wakefd, buf[:])
		u.armWake()
		u.calls.run()
	case udListen:
		u.listened(l, int(ud>>32), uint16(ud>>4), e.Res)
	case udPoll:
		c, side := u.lookup(l, ud)
		if c == nil || c.ends[side].seq != uint16(ud>>4) || e.Res == -int32(unix.ECANCELED) {
			return // an earlier arming, or a connection gone
		}
		en := &c.ends[side]
		en.watched, en.events = false, 0
		events := uint32(e.Res)
		if e.Res < 0 {
			events = unix.EPOLLERR
		}
		gen := c.gen
		l.handle(c, side, events)
		if c.gen == gen && c.phase != closed {
			u.relevel(l, c)
		}
	case udHangup:
		u.hangupPoll = false
		u.hungUpEnds(l)
	case udRecv:
		bid, _ := e.BufferID()
		c, side := u.lookup(l, ud)
		if c == nil {
			if e.Res > 0 {
				u.recycle(bid) // bytes for a connection closed meanwhile: never held
			}
			return
		}
		u.received(l, c, side, e.Res, bid)
	case udSend:
		c, side := u.lookup(l, ud)
		if c == nil {
			u.giveBack(l, uint16(ud>>4))
			return
		}
		u.sent(l, c, side, e.Res)
	}
}

// lookup returns the connection a request's user data names, or nil if it is gone.
func (u *ringEvents) lookup(l *loop, ud uint64) (*conn, int) {
	slot := int32(ud >> 40)
	if int(slot) >= len(l.conns.slots) {
		return nil, 0
	}
	c := l.conns.slots[slot]
	if c == nil || uint64(c.gen&(1<<genBits-1)) != ud>>20&(1<<genBits-1) {
		return nil, 0
	}
	return c, int(ud >> 3 & 1)
}

// relevel arms again what c's phase waits for level-triggered, after a one-shot poll fired:
// if the socket is still ready, the new poll completes at once, as epoll would report it
// again.
func (u *ringEvents) relevel(l *loop, c *conn) {
	rule := &rules[c.phase]
	for side, want := range [2]interest{rule.client, rule.backend} {
		if (want == readable || want == writable) && !c.ends[side].watched {
			if !l.watchOrClose(c, side, want.epollEvents()) {
				return
			}
		}
	}
}

func (u *ringEvents) armWake() {
	s := u.sqe()
	s.PrepPollAdd(u.calls.wakefd, unix.EPOLLIN)
	s.UserData = udWake
}

// watch arms a one-shot poll for ev on one end of c, replacing the one armed. No events: no
// poll, since the kernel adds hang-ups to every poll and an end at EOF would fire at once.
func (u *ringEvents) watch(c *conn, side int, ev uint32) error {
	u.unwatch(c, side)
	if ev &^= unix.EPOLLONESHOT; ev != 0 {
		en := &c.ends[side]
		s := u.sqe()
		s.PrepPollAdd(en.fd, ev)
		s.UserData = connData(udPoll, c, side, en.seq)
	}
	return nil
}

// unwatch cancels the poll armed on one end of c; its completion, whatever it says, is of an
// earlier arming from then on.
func (u *ringEvents) unwatch(c *conn, side int) {
	en := &c.ends[side]
	if en.watched && en.events&^unix.EPOLLONESHOT != 0 {
		u.cancel(connData(udPoll, c, side, en.seq))
	}
	en.seq++
}

func (u *ringEvents) listener(fd int) *ringListener {
	for i := range u.listeners {
		if u.listeners[i].fd == fd {
			return &u.listeners[i]
		}
	}
	u.listeners = append(u.listeners, ringListener{fd: fd})
	return &u.listeners[len(u.listeners)-1]
}

func (u *ringEvents) watchListener(fd int) error {
	ln := u.listener(fd)
	if ln.want {
		return unix.EEXIST // as epoll says of a listener added twice
	}
	ln.want = true
	if u.ring != nil && !ln.armed {
		u.armListener(ln)
	}
	return nil
}

func (u *ringEvents) unwatchListener(fd int) {
	ln := u.listener(fd)
	ln.want = false
	if ln.armed {
		u.cancel(ln.userData())
		ln.armed = false
		ln.seq++
	}
}

func (u *ringEvents) armListener(ln *ringListener) {
	s := u.sqe()
	s.PrepPollAdd(ln.fd, unix.EPOLLIN)
	s.UserData = ln.userData()
	ln.armed = true
}

// userData names the listener's poll of this arming: its descriptor and seq.
func (ln *ringListener) userData() uint64 { return udListen | uint64(ln.seq)<<4 | uint64(ln.fd)<<32 }

// listened accepts the connections a listener's poll says are waiting, and arms it again
// unless the acceptor paused or stopped it meanwhile.
func (u *ringEvents) listened(l *loop, fd int, seq uint16, res int32) {
	ln := u.listener(fd)
	if ln.seq != seq || !ln.armed {
		return
	}
	ln.armed = false
	if res >= 0 {
		l.accept(fd)
	}
	if ln.want && !ln.armed {
		u.armListener(ln)
	}
}

// closeSocket ends what is under way on one end of c (its poll, the request of the flow
// from it) and closes it, all by submissions, which the kernel takes in order at the next
// enter: a request queued for the socket before then still finds it, and its number is
// not free for an accept or a dial meanwhile (a close(2) now would let a queued send write
// to whatever file got the number next). The completions of the cancelled requests then
// find c gone.
func (u *ringEvents) closeSocket(c *conn, side int) {
	en := &c.ends[side]
	u.unwatch(c, side)
	en.watched, en.events = false, 0
	switch en.op {
	case opRecv:
		u.cancel(connData(udRecv, c, side, 0))
	case opSend:
		u.cancel(connData(udSend, c, side, en.bid))
	}
	s := u.sqe()
	s.PrepClose(en.fd)
	s.Flags |= uring.SQECQESkipSuccess
	s.UserData = udCancel
	u.closing = append(u.closing, en.fd)
}

// settle submits the closes queued since the last enter.
func (u *ringEvents) settle() {
	if len(u.closing) > 0 {
		u.submit()
	}
}

// flows takes over the flows of a splicing connection once nothing of it is read by lb (a
// response head) or held in a pipe: from then on its ends receive and send by completions.
func (u *ringEvents) flows(l *loop, c *conn) bool {
	if c.rh != nil {
		return false
	}
	for side := range c.ends {
		if en := &c.ends[side]; en.pipe != nil || en.blocked {
			return false
		}
	}
	for side := range c.ends {
		if c.ends[side].watched {
			l.unwatch(c, side)
		}
		u.receive(c, side)
	}
	return true
}

// receive has one end of c wait for bytes, unless its flow is busy, over, or held still for
// a hand-over.
func (u *ringEvents) receive(c *conn, side int) {
	en := &c.ends[side]
	if en.op != opNone || en.eof || c.quiet {
		return
	}
	s := u.sqe()
	s.PrepRecvSelect(en.fd, u.bufs.Group())
	s.UserData = connData(udRecv, c, side, 0)
	en.op = opRecv
}

// received takes what a receive on c's end side brought: bytes, which go on to the other
// end; the EOF, which goes on as a half-close; or an error.
func (u *ringEvents) received(l *loop, c *conn, side int, res int32, bid uint16) {
	src, dst := &c.ends[side], &c.ends[1-side]
	src.op = opNone
	switch {
	case res > 0:
		src.bid, src.sent, src.pending = bid, 0, int(res)
		l.buffersHeld.Add(1)
		u.send(c, side)
	case res == 0:
		if l.passEOF(c, src, dst) {
			u.watchHangup(c, side)
		}
	case res == -int32(unix.ENOBUFS):
		l.bufferWaits.Add(1)
		u.starved = append(u.starved, flowRef{slot: c.slot, gen: c.gen, side: int8(side)})
	case res == -int32(unix.ECANCELED):
		u.receive(c, side) // held still for a hand-over that is over, or goes on without it
	default:
		l.closeEnd(c, src, unix.Errno(-res))
	}
}

// send sends the rest of the bytes the flow from c's end side holds to the other end.
func (u *ringEvents) send(c *conn, side int) {
	src := &c.ends[side]
	b := u.bufs.Buf(src.bid, src.sent+src.pending)[src.sent:]
	s := u.sqe()
	s.PrepSend(c.ends[1-side].fd, b, unix.MSG_NOSIGNAL)
	s.UserData = connData(udSend, c, side, src.bid)
	src.op = opSend
}

// sent counts what a send took; the rest is sent again, and once all went the buffer goes
// back and the end receives again.
func (u *ringEvents) sent(l *loop, c *conn, side int, res int32) {
	src, dst := &c.ends[side], &c.ends[1-side]
	if res < 0 {
		src.op, src.pending = opNone, 0
		u.giveBack(l, src.bid)
		l.closeEnd(c, dst, unix.Errno(-res))
		return
	}
	l.moved(c, src, int(res), false)
	src.sent += int(res)
	if src.pending -= int(res); src.pending > 0 {
		u.send(c, side)
		return
	}
	src.op = opNone
	u.giveBack(l, src.bid)
	u.receive(c, side)
}

// watchHangup has the hang-up set hear of a reset of c's end side, at EOF: the flow the
// other way goes on, and a reset must end it, as on the epoll engine.
func (u *ringEvents) watchHangup(c *conn, side int) {
	ev := endEvent(c, side, 0)
	if err := sysEpollCtl(u.hangups, unix.EPOLL_CTL_ADD, c.ends[side].fd, &ev); err != nil {
		return // heard of at the next send to it instead
	}
	if !u.hangupPoll {
		u.pollHangups()
	}
}

func (u *ringEvents) pollHangups() {
	s := u.sqe()
	s.PrepPollAdd(u.hangups, unix.EPOLLIN)
	s.UserData = udHangup
	u.hangupPoll = true
}

// hungUpEnds closes the connections whose end at EOF was reset, and polls the set again.
func (u *ringEvents) hungUpEnds(l *loop) {
	n, _ := sysEpollPoll(u.hangups, u.hungUp[:])
	for i := range u.hungUp[:n] {
		if c, side := l.endOf(&u.hungUp[i]); c != nil && c.phase == splicing {
			l.closeEnd(c, &c.ends[side], errPeerGone)
		}
	}
	u.pollHangups()
}

// giveBack returns the buffer a flow held while its bytes were sent.
func (u *ringEvents) giveBack(l *loop, bid uint16) {
	l.buffersHeld.Add(-1)
	u.recycle(bid)
}

// recycle hands a buffer back to the kernel at the end of the turn.
func (u *ringEvents) recycle(bid uint16) {
	u.bufs.Add(bid)
	u.returned = true
}

// retryStarved has the ends whose receive found no buffer receive again, now that some came
// back.
func (u *ringEvents) retryStarved(l *loop) {
	starved := u.starved
	u.starved = u.starved[:0]
	for _, f := range starved {
		if c := l.conns.lookup(f.slot, f.gen); c != nil && c.phase == splicing {
			u.receive(c, int(f.side))
		}
	}
}

// quiesce holds a connection's flows still for a hand-over: no end receives again, and the
// receives waiting are cancelled. It reports whether a request is still under way.
func (u *ringEvents) quiesce(c *conn) bool {
	busy := false
	for side := range c.ends {
		switch c.ends[side].op {
		case opRecv:
			if !c.quiet {
				u.cancel(connData(udRecv, c, side, 0))
			}
			busy = true
		case opSend:
			busy = true
		}
	}
	c.quiet = true
	return busy
}

// unquiet lets c's flows go on after a hand-over that did not take it.
func (u *ringEvents) unquiet(c *conn) {
	if c.quiet {
		c.quiet = false
		for side := range c.ends {
			u.receive(c, side)
		}
	}
}

func (u *ringEvents) close() {
	for _, fd := range u.closing {
		sysClose(fd) // queued, never submitted: the loop ended on an error
	}
	if u.ring != nil {
		u.ring.Close() // cancels what is in flight, before the buffers go
		u.bufs.Close()
		unix.Close(u.hangups)
	}
}
