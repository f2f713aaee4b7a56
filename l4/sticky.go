//go:build linux

package l4

import (
	"errors"

	"golang.org/x/sys/unix"

	"lb/httpsniff"
	"lb/ring"
	"lb/sessions"
)

// Sticky keeps an HTTP client on one backend across its connections. The zero value is off;
// Cookie and SessionCookie may be used together, lb's own cookie then decides first.
//
// With Cookie set, lb reads the Cookie header of a connection's first request: a cookie of
// that name whose value is the id of a backend that is up sends the connection there. Any
// other HTTP connection gets a backend from the ring, and lb inserts
// "Set-Cookie: <Cookie>=<id>; <CookieAttrs>" into the first final response head the backend
// sends on it (1xx interim heads pass unchanged; a 101 takes the cookie). Only that head is
// parsed, bounded by MaxHeaderBytes; every byte after it is spliced untouched, and a head lb
// cannot parse passes through as it came.
//
// With SessionCookie set, lb learns the application's own session cookie: when the first
// final response of a connection sets it, lb records the session, keyed by Keyer, in
// Sessions before it passes that head on (so every replica sharing the store knows the
// session by the time the client can send it again); a request that carries a recorded
// session goes to its backend while that is up. A store that cannot answer in time counts
// as knowing nothing: the ring decides and the head goes on.
type Sticky struct {
	Cookie      string // a cookie name (an RFC 6265 token)
	CookieAttrs string // e.g. "Path=/; HttpOnly; SameSite=Lax"

	SessionCookie string          // the application's session cookie, e.g. PHPSESSID
	Sessions      sessions.Store  // required with SessionCookie; a MemoryStore is called on the loop, others off it
	Keyer         *sessions.Keyer // required with SessionCookie: store keys are keyed hashes, never raw values
}

// chooseSticky looks for lb's cookie naming a backend that is up, then for a recorded
// session, and marks the connection for a cookie and for learning. It returns true when the
// session store was asked off the loop: lookupSession goes on when it answers.
func (l *loop) chooseSticky(c *conn) (waiting bool) {
	cfg := &l.s.cfg.Sticky
	if c.kind != httpsniff.KindHTTP1 {
		return false
	}
	if cfg.Cookie != "" {
		if id, ok := c.head.Cookie(cfg.Cookie); ok && l.stickTo(c, id) {
			c.byCookie = true
		} else {
			c.setCookie = true // no cookie, an unknown backend, or one that is down: re-balance
		}
	}
	if cfg.SessionCookie == "" {
		return false
	}
	c.learn = true
	if v, ok := c.head.Cookie(cfg.SessionCookie); ok && len(v) > 0 && !c.byCookie {
		return l.lookupSession(c, cfg.Keyer.Key(v))
	}
	return false
}

// stickTo makes the backend with this id the one to dial first, if it is up.
func (l *loop) stickTo(c *conn, id []byte) bool {
	b, up, ok := l.s.cfg.Ring.Lookup(string(id))
	if ok && up {
		c.stickTo = b
	}
	return ok && up
}

// nextBackend is the backend to dial next: one that lb had no descriptor for, then the sticky
// one, then the ring's.
func (c *conn) nextBackend() (ring.Backend, bool) {
	if b := c.retry; b.ID != "" {
		c.retry = ring.Backend{}
		return b, true
	}
	if c.stickTo.ID != "" && !c.stickTried {
		c.stickTried = true
		return c.stickTo, true
	}
	if c.byCookie {
		c.setCookie = true // the sticky backend failed: the client is moved and re-cookied
	}
	for b, ok := c.cursor.Next(); ok; b, ok = c.cursor.Next() {
		if b.ID != c.stickTo.ID {
			return b, true
		}
	}
	return ring.Backend{}, false
}

// pumpHead reads the backend's first response into the setup buffer until it has the first
// final head, learns the session it sets and inserts the sticky cookie there, and writes it
// all to the client (flushHead); then the flow is pumped as any other. Interim heads (100
// Continue, 103 Early Hints) go to the client as they come (writeInterim): a client may wait
// for a 100 before it sends its body. It returns false if it closed c.
func (l *loop) pumpHead(c *conn, hup bool) bool {
	st := c.setup
	switch {
	case st.flushing && st.interim > 0:
		if !l.writeInterim(c) {
			return false
		}
		if st.flushing {
			return true
		}
		// The interim head is out: what is buffered after it may be the final head already.
	case st.flushing:
		return l.flushHead(c, hup)
	default:
		n, err := l.readHead(st, c.ends[backend].fd, l.s.cfg.MaxHeaderBytes)
		switch {
		case err == unix.EAGAIN:
			return true
		case errors.Is(err, errHeadMemory): // what came goes on as it came; the rest is spliced
			return l.flushHead(c, hup)
		case err != nil:
			l.close(c, err)
			return false
		case n == 0: // EOF before a complete head: what came goes on as it came
			return l.flushHead(c, hup)
		}
		st.n += n
		c.lastActive = l.now
	}
	for {
		resp, err := st.resp.Parse(st.buf[:st.n])
		if err == httpsniff.ErrNeedMore && st.n < l.s.cfg.MaxHeaderBytes {
			return true // level-triggered: more bytes bring another event
		}
		if err != nil {
			if e := l.s.log.Debug(); e.Enabled() {
				e.Err(err).Str("backend", c.backend.ID).Msg("response head passed through as it came")
			}
			return l.flushHead(c, hup)
		}
		if resp.Interim() {
			st.interim = resp.Len
			if !l.writeInterim(c) {
				return false
			}
			if st.flushing {
				return true // the rest when the client is writable; the backend waits
			}
			continue
		}
		if st.learn {
			if v, ok := resp.SetCookie(l.s.cfg.Sticky.SessionCookie); ok && len(v) > 0 && l.learnSession(c, v) {
				return true // held until the store has the session: see learnSession
			}
		}
		return l.forwardHead(c, hup)
	}
}

// writeInterim writes the interim head at the start of the setup buffer (st.interim bytes,
// st.sent of them already written) to the client. Once all of it went, it leaves the buffer
// and the parser starts on the next head; until then st.flushing keeps the backend unread.
// It returns false if it closed c.
func (l *loop) writeInterim(c *conn) bool {
	st := c.setup
	if !l.writeHead(c, st.interim) {
		return false
	}
	if !st.flushing {
		st.n = copy(st.buf, st.buf[st.interim:st.n])
		st.sent, st.interim, st.resp = 0, 0, httpsniff.ResponseParser{}
	}
	return true
}

// writeHead writes the setup buffer up to end, from st.sent on, to the client; st.flushing
// says whether some of it is left for when the client is writable. It returns false if it
// closed c.
func (l *loop) writeHead(c *conn, end int) bool {
	st := c.setup
	if st.sent < end {
		w, err := sysWrite(c.ends[client].fd, st.buf[st.sent:end])
		if err != nil && err != unix.EAGAIN {
			l.close(c, err)
			return false
		}
		w = max(w, 0)
		l.moved(c, &c.ends[backend], w, false)
		st.sent += w
	}
	st.flushing = st.sent < end
	return true
}

// forwardHead inserts the sticky cookie into the final head at the start of the setup buffer
// if the connection needs one, and flushes the buffer to the client.
func (l *loop) forwardHead(c *conn, hup bool) bool {
	st := c.setup
	if st.setCookie {
		resp, _ := st.resp.Parse(st.buf[:st.n]) // decided already: the same answer
		out := httpsniff.AppendWithField(l.out[:0], st.buf[:resp.Len], l.cookieField(c.backend.ID))
		out = append(out, st.buf[resp.Len:st.n]...)
		l.out = out // grown once, reused
		if l.holdHead(st, len(out)) {
			st.n = copy(st.buf, out)
		} else if e := l.s.log.Debug(); e.Enabled() {
			e.Str("backend", c.backend.ID).Msg("response head passed through without the cookie: head buffers at their memory bound")
		}
	}
	return l.flushHead(c, hup)
}

// cookieField is the Set-Cookie line for a backend, in the loop's scratch buffer.
func (l *loop) cookieField(id string) []byte {
	s := &l.s.cfg.Sticky
	f := append(l.field[:0], "Set-Cookie: "...)
	f = append(f, s.Cookie...)
	f = append(f, '=')
	f = append(f, id...)
	if s.CookieAttrs != "" {
		f = append(f, "; "...)
		f = append(f, s.CookieAttrs...)
	}
	l.field = f
	return f
}

// flushHead writes what the setup buffer holds to the client and then ends the head phase.
// What the client cannot take yet stays there, with the backend unread (rearm), until the
// client is writable again.
func (l *loop) flushHead(c *conn, hup bool) bool {
	st := c.setup
	if !l.writeHead(c, st.n) {
		return false
	}
	if st.flushing {
		return true
	}
	l.putSetup(st)
	c.setup = nil
	return l.pump(c, backend, hup)
}
