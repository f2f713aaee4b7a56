//go:build linux

package l4

import (
	"context"

	"lb/sessions"
)

// Learned sessions (Sticky.SessionCookie): where a request's session lives is asked of the
// store before the dial, and a session the first response sets is recorded before that
// response goes on. A MemoryStore answers at once and is called on the loop. Any other store
// may wait on the network (Redis, bounded by its timeout), so it is called on a goroutine of
// its own while the connection waits, and the answer comes back to the loop through post;
// the connection's generation tells whether it is still the one that asked.

// lookupSession asks the store which backend holds the session with this key and dials it,
// or the ring's next backend if the store does not know it, cannot tell, or names a backend
// that is down. It returns true when it asked off the loop: the dial follows the answer.
func (l *loop) lookupSession(c *conn, key string) (waiting bool) {
	store := c.pool.Sticky.Sessions
	l.stats.StoreCalls++
	if c.pool.localStore {
		id, ok, err := store.Get(context.Background(), key)
		l.sessionFound(c, id, ok, err)
		return false
	}
	l.enter(c, lookingUp)
	gen := c.gen
	l.s.storeCalls.Go(func() {
		id, ok, err := store.Get(context.Background(), key)
		l.post(func() {
			if c.gen != gen || c.phase != lookingUp {
				return // closed, or given up on by expire, meanwhile
			}
			l.sessionFound(c, id, ok, err)
			l.dial(c)
		})
	})
	return true
}

// sessionFound takes the store's answer to a lookup. An error counts as a miss: the store
// reports its outages itself.
func (l *loop) sessionFound(c *conn, id string, ok bool, err error) {
	switch {
	case err != nil:
		l.stats.StoreErrors++
	case ok:
		c.rt.sticky = l.prefer(c, []byte(id))
	}
}

// learnSession records that the session value belongs to the connection's backend. With a
// store off the loop it holds the response head (no more is read from the backend) until the
// store has answered, and returns true; then the head goes on.
func (l *loop) learnSession(c *conn, value []byte) (held bool) {
	cfg := &c.pool.Sticky
	key, id := cfg.Keyer.Key(value), c.backend
	l.stats.StoreCalls++
	if c.pool.localStore {
		if cfg.Sessions.Set(context.Background(), key, id) != nil {
			l.stats.StoreErrors++
		}
		return false
	}
	c.rh.step = holding
	gen := c.gen
	l.s.storeCalls.Go(func() {
		err := cfg.Sessions.Set(context.Background(), key, id) // a failure is the store's to report
		l.post(func() {
			if err != nil {
				l.stats.StoreErrors++
			}
			if c.gen != gen || c.rh == nil || c.rh.step != holding {
				return // closed meanwhile
			}
			c.rh.step = stored
			if l.forward(c, backendSide, false) {
				l.rearm(c)
			}
		})
	})
	return true
}

// isLocal reports whether a store answers without I/O, so that the loop may call it.
func isLocal(s sessions.Store) bool {
	_, ok := s.(*sessions.MemoryStore)
	return ok
}
