//go:build linux

package l4

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// The move stage: on an in-place upgrade the old process sends its spliced connections to the
// new one. A batch is one message on a Unix socket: a header (the number of records), a
// record per connection (handrecord.go), and the connections' sockets as SCM_RIGHTS, client
// then backend. The receiver answers each batch with an ack, the number of its first
// connections it took; only then does the sender close its copies of those and put the rest
// back. Both sides hold a batch's connections in phase moving meanwhile, out of their epoll
// sets, so no byte moves in either process until one of them has the connection for good.

const (
	batchConns  = 60 // connections per message: 120 descriptors, under SCM_MAX_FD (253)
	batchHeader = 4  // uint32: the number of records that follow
	ackSize     = 4  // uint32: how many of the batch's first connections the receiver took
	flushPoll   = 5 * time.Millisecond
)

var (
	errBadBatch = errors.New("l4: malformed handover batch")
	errBadAck   = errors.New("l4: handover ack larger than its batch")
)

// batch is a message under way: its connections stay their loop's, which alone touches them.
type batch struct {
	msg   []byte // the header, then a record per connection
	fds   []int  // client then backend socket, per connection
	conns []*conn
	gens  []uint32 // each connection's generation when it was taken
}

func (b *batch) reset() {
	b.msg, b.fds, b.conns, b.gens = append(b.msg[:0], make([]byte, batchHeader)...), b.fds[:0], b.conns[:0], b.gens[:0]
}

// Handover sends the server's spliced connections to another process's Adopt over uc, and
// returns how many moved and how many connections the server still holds.
//
// It first stops accepting (the listening sockets stay open: the new process accepts from
// them). A connection moves if it is splicing with no byte held in lb (a pipe, a flow blocked
// on its peer, a response head being read); one whose pipe holds bytes moves once they are
// written, Handover looking again every few milliseconds until ctx is done. The others
// (sniffing, dialing, replaying, reading a response head, or still flushing when ctx ends)
// finish here as under Shutdown.
//
// A connection is closed here only after the receiver acknowledged it; those it did not take,
// and a whole batch whose send or ack failed, go on splicing here. The hand-over stops at the
// first batch the receiver did not take whole. Once a batch is sent, Handover waits for its
// ack whatever ctx says: cutting the wait short could leave a connection both processes
// serve. A receiver that dies ends it (EOF).
//
// At the end it shuts uc for writing, so Adopt returns; closing uc is the caller's. Handover
// holds the server's lock throughout: Shutdown, Serve and Reroute wait for it.
func (s *Server) Handover(ctx context.Context, uc *net.UnixConn) (moved, kept int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return 0, int(s.active.Load()), ErrServerClosed
	default:
	}
	for _, l := range s.loops {
		l.call(l.acc.stop)
	}
	moved, err = s.handOver(ctx, uc)
	for _, l := range s.loops {
		l.call(l.unquietAll) // those that did not move
	}
	if cerr := uc.CloseWrite(); err == nil && cerr != nil {
		err = fmt.Errorf("l4: handover: closing the socket for writing: %w", cerr)
	}
	return moved, int(s.active.Load()), err
}

// handOver sends batches until no connection is left to move, or the receiver refuses some.
func (s *Server) handOver(ctx context.Context, uc *net.UnixConn) (int, error) {
	tick := time.NewTicker(flushPoll)
	defer tick.Stop()
	var b batch
	moved := 0
	for {
		flushing := 0
		for _, l := range s.loops {
			for {
				var waits int
				l.call(func() { waits = l.take(&b) })
				if len(b.conns) == 0 {
					flushing += waits
					break
				}
				took, err := sendBatch(ctx, uc, &b)
				l.call(func() { l.settle(&b, took) })
				moved += took
				if err != nil || took < len(b.conns) {
					return moved, err
				}
				if len(b.conns) < batchConns {
					flushing += waits
					break
				}
			}
		}
		if flushing == 0 {
			return moved, nil
		}
		select {
		case <-ctx.Done():
			return moved, nil // those still flushing drain here
		case <-tick.C:
		}
	}
}

// take moves up to a batch of l's connections that can move to phase moving, their records
// and sockets into b, and returns how many more wait for a pipe to empty.
func (l *loop) take(b *batch) (flushing int) {
	b.reset()
	for _, c := range l.conns.slots {
		if c == nil || c.phase != splicing || c.rh != nil {
			continue
		}
		if l.ev.quiesce(c) {
			flushing++ // its engine's requests end first
			continue
		}
		if c.ends[clientSide].pending > 0 || c.ends[backendSide].pending > 0 || c.ends[clientSide].blocked || c.ends[backendSide].blocked {
			flushing++
			continue
		}
		if len(b.conns) == batchConns {
			continue
		}
		at := len(b.msg)
		var err error
		if b.msg, err = appendRecord(b.msg, c.record()); err != nil {
			b.msg = b.msg[:at] // it cannot be described: it drains here
			continue
		}
		l.enter(c, moving)
		b.fds = append(b.fds, c.ends[clientSide].fd, c.ends[backendSide].fd)
		b.conns, b.gens = append(b.conns, c), append(b.gens, c.gen)
	}
	return flushing
}

// unquietAll lets the flows held still for a hand-over go on.
func (l *loop) unquietAll() {
	for _, c := range l.conns.slots {
		if c != nil && c.phase == splicing {
			l.ev.unquiet(c)
		}
	}
}

// record describes c for the process it moves to.
func (c *conn) record() *moveRecord {
	r := &moveRecord{
		eof:      [2]bool{c.ends[clientSide].eof, c.ends[backendSide].eof},
		stickied: c.stickied, admitted: c.admitted, firstFIN: c.firstFIN, sniff: c.sniff, sticky: c.sticky,
		client: c.client, start: c.start, lastActive: c.lastActive,
		moved:   [2]uint64{c.ends[clientSide].moved, c.ends[backendSide].moved},
		backend: c.backend,
	}
	if c.lis != nil {
		r.listener = c.lis.name
	}
	if c.pool != nil {
		r.pool = c.pool.Name
	}
	return r
}

// sendBatch sends b and returns how many of its connections the receiver took. ctx cuts only
// the send: see Handover.
func sendBatch(ctx context.Context, uc *net.UnixConn, b *batch) (int, error) {
	binary.LittleEndian.PutUint32(b.msg, uint32(len(b.conns)))
	stop := context.AfterFunc(ctx, func() { uc.SetWriteDeadline(time.Now()) })
	n, _, err := uc.WriteMsgUnix(b.msg, unix.UnixRights(b.fds...), nil)
	if err == nil && n < len(b.msg) {
		_, err = uc.Write(b.msg[n:]) // a stream socket took part of it; the sockets went with the first byte
	}
	if !stop() {
		uc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		return 0, fmt.Errorf("l4: handover: sending a batch: %w", err)
	}
	var ack [ackSize]byte
	if _, err := io.ReadFull(uc, ack[:]); err != nil {
		return 0, fmt.Errorf("l4: handover: waiting for the ack: %w", err)
	}
	took := int(binary.LittleEndian.Uint32(ack[:]))
	if took > len(b.conns) {
		return 0, fmt.Errorf("%w: %d of %d", errBadAck, took, len(b.conns))
	}
	return took, nil
}

// settle ends the moving phase of b's connections on l: the first took are the other
// process's now and let go here, the rest go on splicing.
func (l *loop) settle(b *batch, took int) {
	for i, c := range b.conns {
		if c.phase != moving || c.gen != b.gens[i] {
			continue // closed meanwhile (the loop stopped on an epoll error)
		}
		if i < took {
			l.letGo(c)
		} else {
			l.enter(c, splicing)
			l.ev.unquiet(c)
		}
	}
}

// letGo closes this process's copies of a connection another process holds: no FIN and no
// RST reach its peers (the sockets stay open there), and no access log line is written (the
// process that closes it writes the one line of its whole life). Its counters and gauges go
// down as at a close.
func (l *loop) letGo(c *conn) {
	l.uncount(c)
	l.enter(c, closed)
	for i := range c.ends {
		l.ev.closeSocket(c, i) // no pipe: only connections without one move
	}
	l.requests.done(c)
	l.free(c)
}

// Adopt takes the connections another process's Handover sends over uc, until uc reads EOF,
// and returns how many it took; the error says why it stopped before EOF. Each connection
// goes on splicing on one of the loops (a batch per loop, in turn) from where it was: its
// listener (by address), pool (by name) and backend (by id, counted in the ring's active
// count if the ring has it), client, start, bytes moved, idle time and half-closes. It is
// counted like an accepted connection (Shutdown waits for it, MaxConns counts it) but not as
// accepted again. At MaxConns, or short of descriptors for a batch's sockets, Adopt takes
// the first of a batch only and acks that: the rest stay with the sender.
//
// A connection's listener is looked up among those ServeRoutes has registered when its batch
// comes (ServeRoutes registers one before it blocks, on the caller's goroutine): one not
// found there is counted under no listener. Adopt leaves uc open: closing it is the caller's.
func (s *Server) Adopt(uc *net.UnixConn) (int, error) {
	buf := make([]byte, batchHeader+batchConns*recordSize)
	oob := make([]byte, unix.CmsgSpace(2*batchConns*4))
	adopted := 0
	for i := 0; ; i++ {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		fds := rights(oob[:oobn])
		if n == 0 && (err == nil || errors.Is(err, io.EOF)) && len(fds) == 0 {
			return adopted, nil
		}
		var recs []moveRecord
		if err == nil {
			recs, err = readBatch(uc, buf, n)
		}
		if err != nil {
			closeFDs(fds)
			if n > 0 {
				uc.Write(make([]byte, ackSize)) // none taken: the sender puts them back now, not at uc's close
			}
			return adopted, fmt.Errorf("l4: adopt: %w", err)
		}
		took, err := s.adoptBatch(s.loops[i%len(s.loops)], uc, recs, fds)
		adopted += took
		if err != nil {
			return adopted, err
		}
	}
}

// readBatch reads the rest of a batch of which n bytes are in buf, and decodes its records.
func readBatch(uc *net.UnixConn, buf []byte, n int) ([]moveRecord, error) {
	if n < batchHeader {
		return nil, fmt.Errorf("%w: %d bytes", errBadBatch, n)
	}
	k := int(binary.LittleEndian.Uint32(buf))
	if k == 0 || k > batchConns {
		return nil, fmt.Errorf("%w: %d records", errBadBatch, k)
	}
	size := batchHeader + k*recordSize
	if n > size {
		return nil, fmt.Errorf("%w: %d bytes for %d records", errBadBatch, n, k)
	}
	if _, err := io.ReadFull(uc, buf[n:size]); err != nil {
		return nil, fmt.Errorf("reading a batch: %w", err)
	}
	return decodeBatch(buf[batchHeader:size])
}

// decodeBatch decodes a run of records.
func decodeBatch(b []byte) ([]moveRecord, error) {
	if len(b)%recordSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is no whole number of records", errBadBatch, len(b))
	}
	recs := make([]moveRecord, 0, len(b)/recordSize)
	for len(b) > 0 {
		r, err := decodeRecord(b[:recordSize])
		if err != nil {
			return nil, err
		}
		recs, b = append(recs, r), b[recordSize:]
	}
	return recs, nil
}

// rights returns the descriptors an SCM_RIGHTS message carried; none if it carried none, or
// something else.
func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if got, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

// closeFDs closes descriptors received for connections the server does not take: the
// sender's copies keep the sockets open.
func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// adoptBatch places the first connections of a batch that the server has room and sockets
// for on l, in phase moving, acks them, and then has them splice. If the ack cannot be
// written they are let go: the sender keeps them.
func (s *Server) adoptBatch(l *loop, uc *net.UnixConn, recs []moveRecord, fds []int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	took := 0
	select {
	case <-s.closing:
	default:
		// Fewer sockets than records: the kernel found no descriptor for the rest (MSG_CTRUNC).
		for took < min(len(recs), len(fds)/2) && !s.full() {
			s.active.Add(1)
			s.conns.Add(1)
			took++
		}
	}
	closeFDs(fds[2*took:])
	var b batch
	l.call(func() {
		for i := range took {
			c := l.adopt(&recs[i], fds[2*i], fds[2*i+1], s.listenerAt(recs[i].listener))
			b.conns, b.gens = append(b.conns, c), append(b.gens, c.gen)
		}
	})
	var ack [ackSize]byte
	binary.LittleEndian.PutUint32(ack[:], uint32(took))
	if _, err := uc.Write(ack[:]); err != nil {
		l.call(func() { l.settle(&b, took) }) // all let go
		return 0, fmt.Errorf("l4: adopt: writing the ack: %w", err)
	}
	l.call(func() { l.settle(&b, 0) }) // all splice
	return took, nil
}

// listenerAt returns the listener on address name, or nil. Under s.mu.
func (s *Server) listenerAt(name string) *listener {
	for _, lis := range s.lis {
		if lis.name == name {
			return lis
		}
	}
	return nil
}

// adopt makes a connection of another process's on l, in phase moving, counted as open.
func (l *loop) adopt(r *moveRecord, clientFD, backendFD int, lis *listener) *conn {
	c := l.conns.add()
	for side, fd := range [2]int{clientFD, backendFD} {
		c.ends[side] = end{fd: fd, eof: r.eof[side], moved: r.moved[side], carried: r.moved[side]}
	}
	c.start, c.lastActive, c.client, c.lis = r.start, r.lastActive, r.client, lis
	c.lc = l.stats.listener(lis)
	c.lc.Active++
	c.sniff, c.sticky, c.stickied, c.firstFIN = r.sniff, r.sticky, r.stickied, r.firstFIN
	if r.admitted {
		// It counts against its address's limit here too, as it did there.
		c.admitted = l.s.admit.Hold(c.client.Addr()).Held()
	}
	c.pool, c.backend = l.poolNamed(r.pool), r.backend
	if c.backend != "" {
		c.active = c.pool.Ring.Start(c.backend) // the zero Active if the ring has no such backend
		c.bc = l.stats.backend(c.pool, c.backend)
		c.bc.Active++
	}
	l.enter(c, moving)
	return c
}

// poolNamed returns the pool of that name, or the first one (whose idle timeout then holds)
// if the configuration has none by that name.
func (l *loop) poolNamed(name string) *pool {
	pools := *l.s.pools.Load()
	for _, p := range pools {
		if p.Name == name {
			return p
		}
	}
	return pools[0]
}
