//go:build linux

// Package l4 accepts TCP connections, routes each one to a backend after sniffing its first
// bytes, and moves bytes both ways with splice(2) until both sides are done.
//
// It is event-driven: one loop per core (loop_linux.go) owns an epoll set and runs every
// step of its connections' lives (conn.go) without a goroutine per connection. So a held
// connection costs its two sockets and a small struct, and a new one costs no goroutine
// start, no park and no hand-off between threads.
//
// # The life of a connection
//
// A connection goes through fixed stages, each a function on its loop:
//
//	admit   loop.accept → acceptor.take → admit            a slot, the start time
//	sniff   sniff → readHead, httpsniff.Parser.Parse        the first bytes, under --sniff-timeout
//	route   route → chooseSticky → lookupSession           lb's cookie, a learned session, the ring
//	dial    dial → nextBackend → dialCache.connect         non-blocking; a failure tries the next
//	replay  replay (again from dialed when writable)       the first bytes, before any other byte
//	splice  flow → forward → responseHead, pump            both ways: drainPipe, spliceIn, copyIn
//	close   close                                          sockets, the debug line, the slot
//	move    Handover → take → movedAway; Adopt → adopt       a spliced one to another process (upgrade)
//
// One connection, from accept to close: the loop wakes on the listener, acceptor.take
// accepts the socket and admit gives it a slot and calls sniff, which reads at once. The head
// is not all there yet: sniff enters sniffing, the client's socket armed for one read. The
// rest comes: handle calls sniff again; the head parses, and route asks the ring's cursor
// for a backend. dial opens a non-blocking socket to it and calls replay, which writes the
// first bytes; the connect is done (loopback), the write takes them all, and replay enters
// splicing, watching both sockets. From then on each event goes to flow, which has pump move
// bytes from the socket that has them to the other. The client's FIN goes on to the
// backend as a half-close (passEOF); the backend's answer and FIN follow the other way, and
// with both directions at EOF, close closes both sockets and frees the slot.
//
// # Phases
//
// A phase is what a connection waits for between two events; enter is the only function
// that changes it, and sets with it each socket's interest and the deadline. Its row also
// holds what it does at an event of its sockets, at each sweep and at its deadline: the
// engines' dispatch (handle) and the sweep only look them up. A stage
// enters the phase in which it waits, not each step on its way, so the usual connection
// makes no epoll call before it splices. The table (rules, phase.go; TestDocShowsTheTable
// holds this copy to it):
//
//	| phase | client | backend | deadline | next | moves on when |
//	|---|---|---|---|---|---|
//	| unused | none | none | none | sniffing, lookingUp, starved, queued, dialing, replaying, splicing, moving, refusing, closed | admit takes an accepted socket and sniffs at once: the phase is where that ends |
//	| sniffing | read once | none | --sniff-timeout | sniffing, lookingUp, starved, queued, dialing, replaying, splicing, refusing, closed | client readable: sniff; the head decided, the buffer full or a FIN: route. Deadline: route with what came, or close |
//	| lookingUp | silent | none | --connect-timeout | starved, queued, dialing, replaying, splicing, refusing, closed | the store answers, or the deadline: dial |
//	| starved | silent | none | --connect-timeout | starved, queued, dialing, replaying, splicing, refusing, closed | each sweep: dial again. Deadline: refuse (503) |
//	| queued | silent | none | --queue-timeout | starved, queued, dialing, replaying, splicing, refusing, closed | each sweep: dial again. Deadline: refuse (503) |
//	| dialing | silent | write | --connect-timeout | starved, queued, dialing, replaying, splicing, refusing, closed | backend writable: replay. Failed, or the deadline: dial the next backend, or refuse |
//	| replaying | silent | write | --connect-timeout | replaying, splicing, closed | backend writable: replay the rest. Failed, or the deadline: close (bytes went: no other backend) |
//	| splicing | flows | flows | --idle-timeout | moving, closed | either end: pump. Both directions at EOF, an error, or idle: close. Handover: move it if no byte waits in lb |
//	| moving | out | out | none | splicing, closed | the ack: the other process took c (closed here, no log line), or did not (splicing again). Adopt: the same, after its ack is sent |
//	| refusing | read | none | 1s | closed | client readable: drain it; its close, or the deadline: close |
//	| closed | none | none | none | unused | the slot is freed |
//
// "read once" is EPOLLONESHOT: once it fired the socket is silent until armed again.
// "silent" is out of the epoll set, or a spent one-shot. "flows" is what the two flows of a
// splicing connection wait for (rearm): a socket is readable while its flow can take bytes,
// and writable while the other flow holds bytes for it. "out" is out of the epoll set
// whatever it was before: a moving connection's sockets are on their way to another
// process, and no event of theirs may run here meanwhile.
//
// # Moving to another process
//
// On an in-place upgrade (handover.go) the old process sends its spliced connections to the
// new one: Handover takes those that hold no byte in lb, sends their two sockets and a
// fixed-size record (handrecord.go) over a Unix socket, and closes its copies once the new
// process's Adopt has acknowledged them; the new process goes on splicing them from where
// they were. Connections still sniffing, dialing or reading a response head finish in the
// old process.
//
// # The loops' rules
//
// A loop owns its connections; no other goroutine touches them. Others reach a loop through
// its call queue (post); anything slow (the session store, DNS) runs off the loop and posts
// its answer back, checked against the connection's generation. Nothing on a loop blocks,
// sleeps, or allocates per event.
package l4
