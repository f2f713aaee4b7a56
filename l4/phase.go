//go:build linux

package l4

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// phase is what a connection waits for between two events. Only enter changes it.
type phase uint8

const (
	unused    phase = iota // a free slot, or a connection not yet waiting for anything
	sniffing               // the client's first bytes
	lookingUp              // the session store's answer (a store off the loop)
	starved                // a descriptor for the backend socket
	queued                 // a slot at a backend: every one up is at its maxconn
	dialing                // the backend's connect; nothing written to it yet
	replaying              // the backend taking the rest of the first bytes
	splicing               // bytes both ways
	moving                 // on its way to another process (Handover): the new one's ack
	refusing               // the refused client's close, after a 503/502
	closed                 // nothing: its sockets are closed and its slot is free again
	phases
)

// interest is what one end of a connection waits for in a phase.
type interest uint8

const (
	noSocket interest = iota // the end has no socket in this phase
	silent                   // out of the epoll set, or its one-shot interest spent
	readOnce                 // readable, one shot: the next event is its last until re-armed
	readable                 // readable or hung up
	writable                 // writable: a connect done, or room for bytes held back
	flows                    // what its two flows wait for (rearm)
	out                      // out of the epoll set, even at EOF or a spent one-shot: nothing may be heard
)

var interestNames = [...]string{"none", "silent", "read once", "read", "write", "flows", "out"}

// deadline is the timeout a phase runs under.
type deadline uint8

const (
	noDeadline deadline = iota
	sniffDeadline
	connectDeadline
	refuseDeadline
	queueDeadline
	idleDeadline // not c.deadline: since bytes last moved (c.lastActive), checked by the sweep
)

var deadlineNames = [...]string{"none", "--sniff-timeout", "--connect-timeout", "1s", "--queue-timeout", "--idle-timeout"}

// phaseRule is one row of the transition table.
type phaseRule struct {
	name            string
	client, backend interest
	deadline        deadline
	renew           bool   // entering it again starts its deadline again (each dial has its own)
	routing         bool   // the connection holds its routing state (the first bytes, the backends tried)
	next            uint16 // the phases it may move to, a bit each
	on              string // what moves it on

	// What the phase does, on its loop (nil: nothing): at an event of one of its sockets; at
	// each sweep while its deadline has not passed; when it has.
	event   func(l *loop, c *conn, side int, events uint32)
	tick    func(l *loop, c *conn)
	expired func(l *loop, c *conn)
}

func to(ps ...phase) uint16 {
	var m uint16
	for _, p := range ps {
		m |= 1 << p
	}
	return m
}

// rules is the connection state machine: every phase, what each end waits for in it, its
// deadline, where it may go, and what it does at an event, a sweep and its deadline. enter
// holds every transition to it; the package doc shows it (TestDocShowsTheTable). It is made
// in init: its reactions call enter, which reads it.
var rules [phases]phaseRule

func init() { rules = phaseRules() }

func phaseRules() [phases]phaseRule {
	return [phases]phaseRule{
		unused: {name: "unused", client: noSocket, backend: noSocket,
			next: to(sniffing, lookingUp, starved, queued, dialing, replaying, splicing, moving, refusing, closed),
			on:   "admit takes an accepted socket and sniffs at once: the phase is where that ends"},
		sniffing: {name: "sniffing", client: readOnce, backend: noSocket, deadline: sniffDeadline, routing: true,
			next:    to(sniffing, lookingUp, starved, queued, dialing, replaying, splicing, refusing, closed),
			on:      "client readable: sniff; the head decided, the buffer full or a FIN: route. Deadline: route with what came, or close",
			event:   (*loop).sniffMore,
			expired: (*loop).sniffExpired},
		lookingUp: {name: "lookingUp", client: silent, backend: noSocket, deadline: connectDeadline, routing: true,
			next:    to(starved, queued, dialing, replaying, splicing, refusing, closed),
			on:      "the store answers, or the deadline: dial",
			expired: (*loop).storeTimedOut},
		starved: {name: "starved", client: silent, backend: noSocket, deadline: connectDeadline, routing: true,
			next:    to(starved, queued, dialing, replaying, splicing, refusing, closed),
			on:      "each sweep: dial again. Deadline: refuse (503)",
			tick:    (*loop).dial, // a descriptor may be free now
			expired: func(l *loop, c *conn) { l.refuse(c, errNoDescriptor) }},
		queued: {name: "queued", client: silent, backend: noSocket, deadline: queueDeadline, routing: true,
			next:    to(starved, queued, dialing, replaying, splicing, refusing, closed),
			on:      "each sweep: dial again. Deadline: refuse (503)",
			tick:    (*loop).dialAgain, // a slot may be free now (one on another loop's backend)
			expired: func(l *loop, c *conn) { l.refuse(c, errQueueTimeout) }},
		dialing: {name: "dialing", client: silent, backend: writable, deadline: connectDeadline, renew: true, routing: true,
			next:    to(starved, queued, dialing, replaying, splicing, refusing, closed),
			on:      "backend writable: replay. Failed, or the deadline: dial the next backend, or refuse",
			event:   (*loop).dialed,
			expired: func(l *loop, c *conn) { l.redial(c, opError("connect", os.ErrDeadlineExceeded)) }},
		replaying: {name: "replaying", client: silent, backend: writable, deadline: connectDeadline, routing: true,
			next:    to(replaying, splicing, closed),
			on:      "backend writable: replay the rest. Failed, or the deadline: close (bytes went: no other backend)",
			event:   (*loop).dialed,
			expired: func(l *loop, c *conn) { l.close(c, opError("write", os.ErrDeadlineExceeded)) }},
		splicing: {name: "splicing", client: flows, backend: flows, deadline: idleDeadline,
			next:  to(moving, closed),
			on:    "either end: pump. Both directions at EOF, an error, or idle: close. Handover: move it if no byte waits in lb",
			event: (*loop).flow,
			tick:  (*loop).closeIfIdle},
		moving: {name: "moving", client: out, backend: out,
			next: to(splicing, closed),
			on:   "the ack: the other process took c (closed here, no log line), or did not (splicing again). Adopt: the same, after its ack is sent"},
		refusing: {name: "refusing", client: readable, backend: noSocket, deadline: refuseDeadline,
			next:    to(closed),
			on:      "client readable: drain it; its close, or the deadline: close",
			event:   (*loop).drainRefused,
			expired: func(l *loop, c *conn) { l.close(c, nil) }},
		closed: {name: "closed", client: noSocket, backend: noSocket,
			next: to(unused),
			on:   "the slot is freed"},
	}
}

func (p phase) String() string {
	if p < phases {
		return rules[p].name
	}
	return fmt.Sprintf("phase(%d)", p)
}

func (i interest) String() string { return interestNames[i] }

func (d deadline) String() string { return deadlineNames[d] }

// epollEvents is the epoll interest that stands for i; flows and the rest are decided elsewhere.
func (i interest) epollEvents() uint32 {
	switch i {
	case readOnce:
		return unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT
	case readable:
		return unix.EPOLLIN | unix.EPOLLRDHUP
	case writable:
		return unix.EPOLLOUT
	}
	return 0
}

// timeout is how long a phase's deadline gives c.
func (s *Server) timeout(c *conn, d deadline) time.Duration {
	switch d {
	case sniffDeadline:
		return s.cfg.SniffTimeout
	case connectDeadline:
		return c.pool.ConnectTimeout
	case refuseDeadline:
		return refuseWait
	case queueDeadline:
		return s.cfg.QueueTimeout
	}
	return 0
}

// enter moves c to phase p: the only place a phase is written. It starts p's deadline when
// c comes from another phase (or p renews it), gives back the routing state p does not need,
// and sets each end's epoll interest to what p waits for. It returns false if that failed
// and c is closed.
//
// A connection enters the phase in which it waits, not each step on its way: admit reads
// before it waits, and a dial writes the first bytes before it waits for writability, so the
// usual connection makes no epoll call until it splices.
func (l *loop) enter(c *conn, p phase) bool {
	from := c.phase
	if rules[from].next&(1<<p) == 0 {
		l.s.badMoves.Add(1)
		l.s.log.Error().Stringer("from", from).Stringer("to", p).Msg("l4: a connection took a transition its table does not have")
	}
	rule := &rules[p]
	if from != p || rule.renew {
		if d := l.s.timeout(c, rule.deadline); d > 0 {
			c.deadline = l.now + int64(d)
		}
	}
	switch {
	case p == queued && from != queued:
		l.queued++
	case from == queued && p != queued:
		l.queued--
	}
	c.phase = p
	if !rule.routing && c.rt != nil {
		l.putRouting(c)
	}
	for side, want := range [2]interest{rule.client, rule.backend} {
		switch want {
		case silent:
			if c.ends[side].events != 0 {
				l.unwatch(c, side)
			}
		case out:
			l.unwatch(c, side)
		case readOnce, readable, writable:
			en := &c.ends[side]
			if ev := want.epollEvents(); en.events != ev || !en.watched {
				if !l.watchOrClose(c, side, ev) {
					return false
				}
			}
		case flows:
			return l.rearm(c)
		}
	}
	return true
}

// watchOrClose sets an end's epoll interest, closing c if that fails; false if it closed c.
func (l *loop) watchOrClose(c *conn, side int, events uint32) bool {
	if err := l.watch(c, side, events); err != nil {
		l.close(c, err)
		return false
	}
	return true
}

// watch sets what one end of c waits for.
func (l *loop) watch(c *conn, side int, events uint32) error {
	if err := l.ev.watch(c, side, events); err != nil {
		return err
	}
	en := &c.ends[side]
	en.watched, en.events = true, events
	return nil
}

// unwatch silences one end of c: out of the epoll set, or no poll armed.
func (l *loop) unwatch(c *conn, side int) {
	l.ev.unwatch(c, side)
	en := &c.ends[side]
	en.watched, en.events = false, 0
}

// phaseTable renders rules as the Markdown table the package doc shows.
func phaseTable() string {
	var b strings.Builder
	b.WriteString("| phase | client | backend | deadline | next | moves on when |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for p := unused; p < phases; p++ {
		r := rules[p]
		var next []string
		for q := unused; q < phases; q++ {
			if r.next&(1<<q) != 0 {
				next = append(next, q.String())
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.name, r.client, r.backend, r.deadline, strings.Join(next, ", "), r.on)
	}
	return b.String()
}
