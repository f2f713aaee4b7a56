//go:build linux

package l4

import (
	"lb/httpsniff"
	"lb/metrics"
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
	cfg, rt := &c.pool.Sticky, c.rt
	if c.kind != httpsniff.KindHTTP1 || cfg.Cookie == "" && cfg.SessionCookie == "" {
		return false
	}
	rt.stickied, rt.sticky = true, metrics.StickyMiss
	if cfg.Cookie != "" {
		if id, ok := rt.req.Cookie(cfg.Cookie); ok {
			rt.sticky = l.prefer(c, id)
			rt.byCookie = rt.sticky == metrics.StickyHit
		}
		rt.setCookie = !rt.byCookie // no cookie, an unknown backend, or one that is down: re-balance
	}
	if cfg.SessionCookie == "" {
		return false
	}
	rt.learn = true
	if v, ok := rt.req.Cookie(cfg.SessionCookie); ok && len(v) > 0 && !rt.byCookie {
		return l.lookupSession(c, cfg.Keyer.Key(v))
	}
	return false
}

// prefer makes the backend with this id the one to dial first, if it is up, and says so.
func (l *loop) prefer(c *conn, id []byte) metrics.StickyResult {
	rt := c.rt
	b, up, ok := c.pool.Ring.Lookup(string(id))
	switch {
	case !ok:
		return metrics.StickyInvalid
	case !up:
		return metrics.StickyDown
	}
	rt.preferred = b
	return metrics.StickyHit
}
