//go:build linux

package l4

import (
	"errors"
	"os"
	"time"

	"lb/accesslog"
	"lb/httpsniff"
	"lb/metrics"
	"lb/proxyhdr"
	"lb/ring"
)

// What lb counts and logs of its connections. Each loop counts its own in plain integers
// (metrics.Counters, and a metrics.BackendCounters per backend it dialed), which only its
// goroutine touches: a scrape reads them through the loops' call queues (Collect). The
// access log line is made at the close stage, and only when the log is on.

var _ metrics.Source = (*Server)(nil)

// loopStats are a loop's counters.
type loopStats struct {
	metrics.Counters
	backends  map[backendKey]*metrics.BackendCounters // made at the first dial, not per connection
	listeners map[*listener]*metrics.ListenerCounters // made at the first accept; nil: a connection without one (tests)
}

// listener returns the counters of lis.
func (st *loopStats) listener(lis *listener) *metrics.ListenerCounters {
	lc := st.listeners[lis]
	if lc == nil {
		lc = new(metrics.ListenerCounters)
		st.listeners[lis] = lc
	}
	return lc
}

// backendKey names a backend within its pool: one id may be in two pools, and each counts
// its own traffic.
type backendKey struct{ pool, id string }

// backend returns the counters of the backend with this id in pool p.
func (st *loopStats) backend(p *pool, id string) *metrics.BackendCounters {
	k := backendKey{p.Name, id}
	b := st.backends[k]
	if b == nil {
		b = new(metrics.BackendCounters)
		st.backends[k] = b
	}
	return b
}

// Collect adds every loop's counters into s, one loop at a time, and a row per backend of
// the ring (metrics.Source). Counters of connections still open are in: bytes are counted
// when a connection closes.
func (s *Server) Collect(snap *metrics.Snapshot) {
	for _, p := range *s.pools.Load() {
		for _, b := range p.Ring.Snapshot() {
			snap.AddBackend(p.Name, b.ID).Up = b.Up
		}
	}
	for _, l := range s.loops {
		l.call(func() {
			snap.Counters.Add(&l.stats.Counters)
			for lis, lc := range l.stats.listeners {
				name := ""
				if lis != nil {
					name = lis.name
				}
				snap.AddListener(name, lc)
			}
			snap.Queued += int64(l.queued)
			for i := range snap.Backends {
				row := &snap.Backends[i]
				if b := l.stats.backends[backendKey{row.Pool, row.ID}]; b != nil {
					row.BackendCounters.Add(b)
				}
			}
		})
	}
}

// sniffed counts what sniffing made of c's first bytes (route stage), and keeps what the
// access log needs of its request.
func (l *loop) sniffed(c *conn) {
	var k metrics.SniffKind
	switch err := c.rt.sniffErr; {
	case errors.Is(err, os.ErrDeadlineExceeded):
		k = metrics.SniffTimeout
	case errors.Is(err, httpsniff.ErrHeadTooLarge), errors.Is(err, errHeadMemory):
		k = metrics.SniffOversized
	case c.kind == httpsniff.KindHTTP1 && err == nil:
		k = metrics.SniffHTTP1
	case c.kind == httpsniff.KindHTTP2:
		k = metrics.SniffH2
	case c.kind == httpsniff.KindTLS:
		k = metrics.SniffTLS
	default:
		k = metrics.SniffOther
	}
	c.sniff = k
	l.stats.Sniff[k]++
	if head := &c.rt.req; l.s.cfg.AccessLog.Enabled() && c.kind == httpsniff.KindHTTP1 {
		l.requests.of(c).Set(head.Method, head.Host, head.Target)
	}
}

// handedOver counts c as the connection of its backend (splice stage): the dial worked and
// the first bytes went.
func (l *loop) handedOver(c *conn) {
	rt := c.rt
	c.bc = l.stats.backend(c.pool, c.backend)
	c.bc.Connections++
	c.bc.Active++
	if c.kind == httpsniff.KindHTTP1 && rt.sniffErr == nil {
		c.bc.HTTP[metrics.MethodOf(rt.req.Method)]++
	}
	if rt.stickied {
		if rt.sticky == metrics.StickyHit && c.backend != rt.preferred.ID {
			rt.sticky = metrics.StickyDown // the named backend failed: the ring decided
		}
		c.sticky, c.stickied = rt.sticky, true
		l.stats.Sticky[rt.sticky]++
	}
}

// refused counts a connection no backend took.
func (l *loop) refused(c *conn, why metrics.RefuseReason, answered bool) {
	c.lc.Refused[why]++
	if !answered {
		return
	}
	switch why {
	case metrics.RefuseDialFailed:
		l.stats.Answers[metrics.Answer502]++
	case metrics.RefuseIPConns, metrics.RefuseIPRate:
		l.stats.Answers[metrics.Answer429]++
	case metrics.RefuseNoRoute:
		// The listener's own status: not one of lb's fixed answers.
	default:
		l.stats.Answers[metrics.Answer503]++
	}
}

// closing counts c's end and writes its access log line (close stage), before its sockets
// and state are gone.
func (l *loop) closing(c *conn, err error) {
	l.uncount(c)
	d := time.Duration(l.now - c.start)
	l.stats.Durations.Observe(d)
	up, down := c.ends[clientSide].moved, c.ends[backendSide].moved
	if c.errSide == backendSide+1 && c.bc != nil && down == 0 && aborted(err) && c.pool.OnDialFailure != nil {
		// The backend took the connection and reset or dropped it before its first byte: a
		// passive health check, counted toward --fall like a failed dial.
		c.pool.OnDialFailure(ring.Backend{ID: c.backend})
	}
	log := l.s.cfg.AccessLog
	if !log.Enabled() {
		return
	}
	e := accesslog.Entry{
		Client: c.client, BackendID: c.backend,
		Sniff: c.sniff.String(), BytesUp: up, BytesDown: down, Duration: d, Cause: c.cause(err),
	}
	if c.lis != nil {
		e.Listener = c.lis.name
	}
	if c.pool != nil && c.pool.Name != "default" {
		e.Pool = c.pool.Name
	}
	if c.stickied {
		e.Sticky = c.sticky.String()
	}
	if c.pool != nil && c.backend != "" { // nil: closed or refused before a pool was chosen
		if b, _, ok := c.pool.Ring.Lookup(c.backend); ok {
			e.BackendAddr = b.Addr
		}
	}
	if e.Cause == accesslog.Error || e.Cause == accesslog.Refused {
		e.Err = err
	}
	if r := l.requests.held(c); r != nil {
		r.Fill(&e)
	}
	log.Log(&e)
	l.requests.done(c)
}

// uncount takes c out of the gauges and limits that count it, and adds the bytes it moved
// here to its backend's counters: at its close, or when another process took it over.
func (l *loop) uncount(c *conn) {
	c.active.End()
	if c.bc != nil && l.queued > 0 {
		l.freed = true // its backend slot may be one a queued connection waits for
	}
	if c.admitted {
		l.s.admit.ReleaseAddr(c.client.Addr())
	}
	c.lc.Active--
	if c.bc != nil {
		up, down := &c.ends[clientSide], &c.ends[backendSide]
		c.bc.Active--
		c.bc.BytesSent += up.moved - up.carried
		c.bc.BytesReceived += down.moved - down.carried
	}
}

// cause is why c closes with err, for its access log line.
func (c *conn) cause(err error) accesslog.Cause {
	switch {
	case c.phase == refusing,
		errors.Is(err, errNoneUp), errors.Is(err, errQueueTimeout), errors.Is(err, errDialFailed), errors.Is(err, errNoDescriptor),
		errors.Is(err, errOverLimit), errors.Is(err, errNoRoute),
		errors.Is(err, proxyhdr.ErrMalformed), errors.Is(err, proxyhdr.ErrNotProxy),
		c.phase == sniffing && errors.Is(err, os.ErrDeadlineExceeded):
		return accesslog.Refused
	case errors.Is(err, errIdle):
		return accesslog.IdleTimeout
	case errors.Is(err, errShutdown):
		return accesslog.Drain
	case err == nil && c.firstFIN == backendSide+1:
		return accesslog.BackendClosed
	case err == nil:
		return accesslog.ClientClosed
	}
	return accesslog.Error
}

// closeEnd closes c after an error on one of its ends: the close stage tells a backend that
// failed from a client that did.
func (l *loop) closeEnd(c *conn, en *end, err error) {
	c.errSide = int8(c.sideOf(en)) + 1
	l.close(c, err)
}

func (c *conn) sideOf(en *end) int {
	if en == &c.ends[backendSide] {
		return backendSide
	}
	return clientSide
}

// requests are the first requests of a loop's connections, for the access log, by slot: a
// connection pays for one only while the log is on, and a slot's buffer is reused by its
// next connections.
type requests struct {
	bySlot []*accesslog.Request
	set    []bool
}

// of returns c's request, to be set.
func (r *requests) of(c *conn) *accesslog.Request {
	for int(c.slot) >= len(r.bySlot) {
		r.bySlot, r.set = append(r.bySlot, new(accesslog.Request)), append(r.set, false)
	}
	r.set[c.slot] = true
	return r.bySlot[c.slot]
}

// held returns c's request, or nil if it has none.
func (r *requests) held(c *conn) *accesslog.Request {
	if int(c.slot) < len(r.set) && r.set[c.slot] {
		return r.bySlot[c.slot]
	}
	return nil
}

// done empties c's request, keeping its buffer for the slot's next connection.
func (r *requests) done(c *conn) {
	if q := r.held(c); q != nil {
		q.Reset()
		r.set[c.slot] = false
	}
}
