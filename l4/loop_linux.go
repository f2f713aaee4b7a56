package l4

import (
	"errors"
	"runtime"

	"lb/httpsniff"
	"lb/metrics"
	"sync/atomic"
	"time"
)

// A loop owns an epoll set and every connection it accepted; only its goroutine touches
// them, so the data path takes no lock. It only dispatches: events to the stages of a
// connection's life (conn.go), deadlines to expire, calls from other goroutines (post) to
// the functions they carry. What it holds, each part in its own type: the poller and call
// queue (poll_linux.go), the acceptor (accept.go), the connection slots (slots.go), the hot
// pipe (pipe_linux.go), the resolver's entries (resolve.go), head buffers (headbuf.go).

var (
	errIdle     = errors.New("idle timeout")
	errPeerGone = errors.New("peer reset or closed")
	errShutdown = errors.New("shutdown deadline")
)

type loop struct {
	s       *Server
	ev      events
	calls   *callQueue
	started chan error // what run's engine start said: nil, or why the loop cannot run
	done    chan struct{}

	// Counters read by Stats.
	spliced      atomic.Uint64
	idleTimeouts atomic.Uint64
	buffersHeld  atomic.Int64 // io_uring: provided buffers whose bytes are being sent
	bufferWaits  atomic.Uint64

	// Owned by the loop goroutine.
	acc       acceptor
	conns     slotTable
	routings  spares[routing]
	respHeads spares[respHead]
	requests  requests  // with the access log on (observe.go)
	stats     loopStats // read by Collect, through call
	pipes     loopPipes
	dials     dialCache
	heads     spareHeads            // head buffers between connections (headbuf.go)
	scratch   scratch               // a rewritten response head (resphead.go)
	hello     httpsniff.ClientHello // the ClientHello of the connection being routed (pool.go)
	buf       []byte                // copy buffer for small reads
	now       int64                 // unix nanos, read once per wake-up
	nextSweep int64
	nextTrim  int64 // when spare head buffers and pipes are trimmed next
	queued    int   // connections in phase queued
	freed     bool  // a connection that held a backend slot closed: the queued try again
	stopped   bool
}

func newLoop(s *Server) (*loop, error) {
	calls, err := newCallQueue()
	if err != nil {
		return nil, err
	}
	ev, err := newEvents(s.engine, calls)
	if err != nil {
		calls.close()
		return nil, err
	}
	return &loop{
		s: s, ev: ev, calls: calls, started: make(chan error, 1), done: make(chan struct{}),
		acc:   acceptor{s: s, ev: ev},
		pipes: loopPipes{pool: &s.pipes},
		dials: dialCache{r: s.resolver, addrs: map[string]*dialAddr{}},
		stats: loopStats{backends: map[backendKey]*metrics.BackendCounters{}, listeners: map[*listener]*metrics.ListenerCounters{}},
		buf:   make([]byte, copySize),
	}, nil
}

// post queues fn to run on the loop's goroutine and returns at once. fn never runs if the
// loop has stopped; post must not be called once the loop is released.
func (l *loop) post(fn func()) { l.calls.post(fn) }

// call runs fn on the loop's goroutine and returns when it has run.
func (l *loop) call(fn func()) {
	ran := make(chan struct{})
	l.post(func() { fn(); close(ran) })
	select {
	case <-ran:
	case <-l.done: // the loop ended on an epoll error
	}
}

// run dispatches events until the loop stops.
func (l *loop) run() {
	defer close(l.done)
	// The io_uring engine locks the loop to its thread. Unlocked at the end, the thread goes
	// back to the runtime; left locked, the runtime ends it, and a thread's end kills the
	// children it started with a parent-death signal.
	defer runtime.UnlockOSThread()
	err := l.ev.start()
	l.started <- err
	if err != nil {
		return
	}
	for !l.stopped {
		if err := l.ev.turn(l); err != nil {
			l.s.log.Error().Err(err).Msg("waiting for events failed; the loop stops and closes its connections")
			l.acc.stop()
			l.closeAll(errShutdown)
			return
		}
		if l.freed {
			l.freed = false
			l.dialQueued()
		}
		if l.now >= l.nextSweep {
			l.sweep()
		}
	}
}

// accept admits the connections waiting on listener lfd, a batch at a time.
func (l *loop) accept(lfd int) {
	l.ev.settle()
	for range acceptBatch {
		a, ok := l.acc.take(lfd, l.now)
		if !ok {
			break
		}
		l.admit(a)
	}
	l.nextSweep = min(l.nextSweep, l.acc.wakeAt())
}

// sweepEvery is how often deadlines are checked: a quarter of the shortest timeout, from
// 5 ms to 250 ms.
func (l *loop) sweepEvery() time.Duration {
	d := l.s.cfg.SniffTimeout
	for _, p := range *l.s.pools.Load() {
		d = min(d, p.ConnectTimeout)
		if p.IdleTimeout > 0 {
			d = min(d, p.IdleTimeout)
		}
	}
	return min(max(d/4, 5*time.Millisecond), 250*time.Millisecond)
}

// sweep enforces deadlines (expire), the idle timeout and accept back-off, and trims what
// the loop keeps spare.
func (l *loop) sweep() {
	l.nextSweep = l.now + int64(l.acc.nextWake(l.sweepEvery()))
	l.acc.resume(l.now)
	if l.now >= l.nextTrim {
		l.nextTrim = l.now + trimEvery
		l.trimHeads()
		l.s.pipes.trim(l.now)
		l.dials.prune()
	}
	for _, c := range l.conns.slots {
		if c == nil {
			continue
		}
		switch r := &rules[c.phase]; {
		case r.deadline == idleDeadline || l.now < c.deadline: // idle: a phase's own measure
			if r.tick != nil {
				r.tick(l, c)
			}
		case r.expired != nil:
			r.expired(l, c)
		}
	}
}

// closeIfIdle is splicing's sweep: a connection whose bytes last moved --idle-timeout ago is
// closed. A head held for the session store is not idle: the store's own timeout bounds it.
func (l *loop) closeIfIdle(c *conn) {
	if idle := int64(c.pool.IdleTimeout); idle > 0 && l.now-c.lastActive >= idle && !(c.rh != nil && c.rh.step == holding) {
		l.idleTimeouts.Add(1)
		l.close(c, errIdle)
	}
}

// dialQueued dials again the connections waiting for a backend slot, after one of this
// loop's connections gave one back.
func (l *loop) dialQueued() {
	for _, c := range l.conns.slots {
		if l.queued == 0 {
			return
		}
		if c != nil && c.phase == queued {
			l.dialAgain(c)
		}
	}
}

// dialAgain dials a queued connection with a fresh pick of its pool.
func (l *loop) dialAgain(c *conn) {
	c.rt.cursor = c.pool.Ring.CursorFor(c.client.Addr())
	l.dial(c)
}

// closeAll closes every connection of the loop.
func (l *loop) closeAll(why error) {
	for _, c := range l.conns.slots {
		if c != nil {
			l.close(c, why)
		}
	}
}

func (l *loop) stop() {
	l.acc.stop()
	l.closeAll(errShutdown)
	l.stopped = true
}

// release closes the loop's descriptors once its goroutine has ended (or never started).
func (l *loop) release() {
	l.pipes.close()
	l.ev.close()
	l.calls.close()
}
