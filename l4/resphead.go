//go:build linux

package l4

import (
	"errors"

	"golang.org/x/sys/unix"

	"lb/httpsniff"
)

// With a sticky cookie or learned sessions, lb reads the backend's first response itself
// until it has the first final head: it learns the session that head sets, inserts the
// sticky cookie into it, and writes it all to the client. Interim heads (100 Continue,
// 103 Early Hints) go to the client as they come: a client may wait for a 100 before it
// sends its body. Then the flow is pumped as any other.

// headStep is where the rewrite of the first response head is.
type headStep uint8

const (
	reading        headStep = iota // the head, into buf
	writingInterim                 // an interim head, to the client; the backend waits
	holding                        // the final head, until the session store has its session; the backend waits
	stored                         // the store answered: the head goes on
	flushing                       // the final head and what came after it, to the client; the backend waits
)

// respHead is the rewrite of one connection's first response head.
type respHead struct {
	buf       headBuf // the head at its start (interim heads sent are gone from it)
	step      headStep
	parser    httpsniff.ResponseParser
	sent      int  // bytes of buf written to the client
	interim   int  // length of the interim head at the start of buf
	setCookie bool // insert the sticky cookie
	learn     bool // record the session cookie the head sets
}

// holdsBackend reports whether the backend must not be read: its head waits for the session
// store or for the client.
func (rh *respHead) holdsBackend() bool {
	return rh != nil && (rh.step == writingInterim || rh.step == holding || rh.step == flushing)
}

// waitsForClient reports whether part of the head waits for the client to be writable.
func (rh *respHead) waitsForClient() bool {
	return rh != nil && (rh.step == writingInterim || rh.step == flushing)
}

// scratch is a loop's buffers for building a rewritten head; grown once, reused.
type scratch struct {
	out   []byte // a response head with the sticky cookie inserted
	field []byte // the Set-Cookie line
}

// readResponseHead starts the rewrite: the routing buffer, replayed, takes the response head.
func (l *loop) readResponseHead(c *conn) {
	rt, rh := c.rt, l.respHeads.get()
	rh.buf, rt.first = headBuf{b: rt.first.b}, headBuf{}
	rh.setCookie, rh.learn = rt.setCookie, rt.learn
	c.rh = rh
}

// putRespHead ends the rewrite: its buffer goes back to the loop.
func (l *loop) putRespHead(c *conn) {
	l.putHead(&c.rh.buf)
	l.respHeads.put(c.rh)
	c.rh = nil
}

// responseHead moves the first response head on by one step. It reports whether the head is
// through (the flow goes on as any other), and if not, whether c is still open.
func (l *loop) responseHead(c *conn) (through, open bool) {
	rh := c.rh
	switch rh.step {
	case holding:
		return false, true
	case stored:
		return l.forwardHead(c)
	case flushing:
		return l.flushHead(c)
	case writingInterim:
		if !l.writeInterim(c) {
			return false, false
		}
		if rh.step == writingInterim {
			return false, true
		}
		// The interim head is out: what is buffered after it may be the final head already.
	case reading:
		n, err := l.readHead(&rh.buf, c.ends[backendSide].fd, l.s.cfg.MaxHeaderBytes)
		switch {
		case err == unix.EAGAIN:
			return false, true
		case errors.Is(err, errHeadMemory), err == nil && n == 0:
			// At the memory bound, or EOF before a complete head: what came goes on as it came.
			return l.flushHead(c)
		case err != nil:
			l.closeEnd(c, &c.ends[backendSide], err)
			return false, false
		}
		c.lastActive = l.now
	}
	for {
		resp, err := rh.parser.Parse(rh.buf.bytes())
		if errors.Is(err, httpsniff.ErrNeedMore) && rh.buf.n < l.s.cfg.MaxHeaderBytes {
			return false, true // level-triggered: more bytes bring another event
		}
		if err != nil {
			if e := l.s.log.Debug(); e.Enabled() {
				e.Err(err).Str("backend", c.backend).Msg("response head passed through as it came")
			}
			return l.flushHead(c)
		}
		if resp.Interim() {
			rh.interim = resp.Len
			if !l.writeInterim(c) {
				return false, false
			}
			if rh.step == writingInterim {
				return false, true // the rest when the client is writable; the backend waits
			}
			continue
		}
		if rh.learn {
			if v, ok := resp.SetCookie(c.pool.Sticky.SessionCookie); ok && len(v) > 0 && l.learnSession(c, v) {
				return false, true // held until the store has the session: see learnSession
			}
		}
		return l.forwardHead(c)
	}
}

// writeInterim writes the interim head at the start of the buffer to the client. Once all of
// it went, it leaves the buffer and the parser starts on the next head; until then the step
// is writingInterim. It returns false if it closed c.
func (l *loop) writeInterim(c *conn) bool {
	rh := c.rh
	if !l.writeHead(c, rh.interim) {
		return false
	}
	if rh.sent < rh.interim {
		rh.step = writingInterim
		return true
	}
	rh.buf.n = copy(rh.buf.b, rh.buf.b[rh.interim:rh.buf.n])
	rh.sent, rh.interim, rh.parser, rh.step = 0, 0, httpsniff.ResponseParser{}, reading
	return true
}

// writeHead writes the buffer up to end, from rh.sent on, to the client. It returns false if
// it closed c.
func (l *loop) writeHead(c *conn, end int) bool {
	rh := c.rh
	if rh.sent < end {
		w, err := sysWrite(c.ends[clientSide].fd, rh.buf.b[rh.sent:end])
		if err != nil && err != unix.EAGAIN {
			l.closeEnd(c, &c.ends[clientSide], err)
			return false
		}
		w = max(w, 0)
		l.moved(c, &c.ends[backendSide], w, false)
		rh.sent += w
	}
	return true
}

// forwardHead inserts the sticky cookie into the final head at the start of the buffer if
// the connection needs one, and flushes the buffer to the client.
func (l *loop) forwardHead(c *conn) (through, open bool) {
	rh := c.rh
	if rh.setCookie {
		resp, _ := rh.parser.Parse(rh.buf.bytes()) // decided already: the same answer
		out := httpsniff.AppendWithField(l.scratch.out[:0], rh.buf.b[:resp.Len], l.cookieField(&c.pool.Sticky, c.backend))
		out = append(out, rh.buf.b[resp.Len:rh.buf.n]...)
		l.scratch.out = out
		if l.holdHead(&rh.buf, len(out)) {
			rh.buf.n = copy(rh.buf.b, out)
		} else if e := l.s.log.Debug(); e.Enabled() {
			e.Str("backend", c.backend).Msg("response head passed through without the cookie: head buffers at their memory bound")
		}
	}
	return l.flushHead(c)
}

// cookieField is the Set-Cookie line for a backend, in the loop's scratch buffer.
func (l *loop) cookieField(s *Sticky, id string) []byte {
	f := append(l.scratch.field[:0], "Set-Cookie: "...)
	f = append(f, s.Cookie...)
	f = append(f, '=')
	f = append(f, id...)
	if s.CookieAttrs != "" {
		f = append(f, "; "...)
		f = append(f, s.CookieAttrs...)
	}
	l.scratch.field = f
	return f
}

// flushHead writes what the buffer holds to the client and then ends the rewrite. What the
// client cannot take yet stays there, with the backend unread (rearm), until the client is
// writable again.
func (l *loop) flushHead(c *conn) (through, open bool) {
	rh := c.rh
	if !l.writeHead(c, rh.buf.n) {
		return false, false
	}
	if rh.sent < rh.buf.n {
		rh.step = flushing
		return false, true
	}
	l.putRespHead(c)
	return true, true
}
