//go:build linux

package l4

import (
	"errors"

	"golang.org/x/sys/unix"
)

// The splice stage: bytes both ways until both directions are done. Small reads are copied
// through the loop's buffer (for a few hundred bytes, read+write costs the kernel less than
// splicing through a pipe); once a read fills that buffer the flow is bulk and goes
// socket → pipe → socket with splice, zero-copy, until a read comes up short. Bytes the
// destination cannot take yet wait in a pipe that the flow holds until they are written.

const (
	pumpRounds = 16       // reads one event may take before other connections get a turn
	pipeSize   = 64 << 10 // Linux's default pipe capacity: what one splice can move
	copySize   = 16 << 10 // a read that fills the loop's copy buffer makes a flow bulk
)

var errPipeShort = errors.New("pipe took less than a read it was sized for")

// flow handles an event of a splicing connection: bytes to move, or an end gone.
func (l *loop) flow(c *conn, side int, events uint32) {
	if events&unix.EPOLLOUT != 0 && !l.forward(c, 1-side, false) {
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		if !c.ends[side].eof {
			// RDHUP without ERR: the peer's FIN is in, and so is every byte it sent before it.
			// (A reset also reports RDHUP, with ERR; its bytes are read and its error found as
			// before, over more rounds.)
			if !l.forward(c, side, events&(unix.EPOLLRDHUP|unix.EPOLLERR) == unix.EPOLLRDHUP) {
				return
			}
		} else if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			// Reading from this end is over and now it cannot be written to either.
			l.closeEnd(c, &c.ends[side], errPeerGone)
			return
		}
	}
	l.rearm(c)
}

// forward moves bytes from one end to the other: the backend's first response head first,
// when lb reads it (resphead.go), then as pump does. It returns false if it closed c.
func (l *loop) forward(c *conn, from int, hup bool) bool {
	if from == backendSide && c.rh != nil {
		if through, open := l.responseHead(c); !through {
			return open
		}
	}
	return l.pump(c, from, hup)
}

// pump moves bytes from c.ends[from] to the other end until the source is drained, the
// destination is full, or the round budget is spent. hup says the source's FIN is in, so it
// is read on to the EOF now rather than after another epoll round, and what a short read
// took waits to leave with the FIN. It returns false if it closed c.
func (l *loop) pump(c *conn, from int, hup bool) bool {
	src, dst := &c.ends[from], &c.ends[1-from]
	src.blocked = false // dst is writable, or the flow goes on from src
	took := false       // bytes were read from src in this call
	for range pumpRounds {
		if src.pending > 0 {
			if more, open := l.drainPipe(c, src, dst, hup); !more {
				return open
			}
			continue
		}
		if src.eof {
			return true
		}
		p, perr := l.pipes.ready()
		if perr != nil && !ownShortage(perr) {
			l.close(c, perr)
			return false
		}
		if p == nil {
			// No descriptor for a pipe: copy what dst takes, and leave the rest in src.
			l.s.startShortage(perr)
			return l.copyWithoutPipe(c, src, dst, hup)
		}
		var n int
		var err error
		read := !src.bulk
		if src.bulk {
			if n, err = l.spliceIn(src, p); n > 0 {
				took = true
				continue // written at the top of the loop
			}
			// At TCP's urgent mark splice moves nothing: it returns 0 as if at the EOF, or
			// EAGAIN while epoll goes on reporting data. A read steps over the urgent byte.
			read = err == nil || err == unix.EAGAIN && !took
		}
		if read {
			// The rest of a short write goes into the hot pipe: read no more than it holds.
			n, err = sysRead(src.fd, l.buf[:min(len(l.buf), p.size)])
			took = took || n > 0
		}
		if more, open := l.copyIn(c, src, dst, p, n, err, hup); !more {
			return open
		}
	}
	return true
}

// drainPipe writes what src's pipe holds to dst. It reports whether the pump goes on, and
// if not, whether c is still open.
func (l *loop) drainPipe(c *conn, src, dst *end, hup bool) (more, open bool) {
	n, err := sysSplice(src.pipe.r, dst.fd, src.pending)
	if err == unix.EAGAIN {
		return false, true // rearm waits for dst to be writable
	}
	if err != nil {
		l.closeEnd(c, dst, err)
		return false, false
	}
	src.pending -= n
	l.moved(c, src, n, true)
	if src.pending > 0 {
		return true, true
	}
	l.pipes.release(src)
	// After a short read the socket is drained: epoll says if more came.
	return src.bulk || hup, true
}

// spliceIn moves what a bulk source holds into the hot pipe, which the flow then holds until
// it is written. It returns the bytes moved, and splice's error when none were.
func (l *loop) spliceIn(src *end, p *pipe) (int, error) {
	n, err := sysSplice(src.fd, p.w, pipeSize)
	if n > 0 {
		l.pipes.claim()
		src.pipe, src.pending, src.bulk = p, n, n >= len(l.buf)
	}
	return n, err
}

// copyIn writes to dst what a read from src took into the loop's buffer (n bytes, or err);
// what dst cannot take goes into the hot pipe p, which the flow then holds. It reports
// whether the pump goes on, and if not, whether c is still open.
func (l *loop) copyIn(c *conn, src, dst *end, p *pipe, n int, err error, hup bool) (more, open bool) {
	if ended, open := l.readEnded(c, src, dst, n, err); ended {
		return false, open
	}
	src.bulk = n == len(l.buf)
	// A short read after the source's FIN came in took its last bytes, or stopped at an
	// urgent mark. Sent with MSG_MORE they wait for what the next round reads: the EOF,
	// whose FIN passEOF adds to the same segment (the peer is woken once and ACKs once),
	// or the bytes after the mark, whose write pushes them.
	var w int
	if hup && n < min(len(l.buf), p.size) {
		w, err = sysSendMore(dst.fd, l.buf[:n])
	} else {
		w, err = sysWrite(dst.fd, l.buf[:n])
	}
	if err != nil && err != unix.EAGAIN {
		l.closeEnd(c, dst, err)
		return false, false
	}
	w = max(w, 0)
	l.moved(c, src, w, false)
	if w < n {
		// dst is full: keep the rest in the hot pipe, which the read was sized to, until
		// dst is writable.
		if m, perr := sysWrite(p.w, l.buf[w:n]); perr != nil || m < n-w {
			l.close(c, errors.Join(errPipeShort, perr))
			return false, false
		}
		l.pipes.claim()
		src.pipe, src.pending = p, n-w
		return false, true
	}
	return src.bulk || hup, true
}

// copyWithoutPipe moves bytes from src to dst when lb has no descriptor for a pipe: it peeks
// at what src holds, writes it, and takes from src only what dst took, so nothing is held
// in lb. When dst is full, the flow waits for it (blocked) with the bytes still in src.
// It returns false if it closed c.
func (l *loop) copyWithoutPipe(c *conn, src, dst *end, hup bool) bool {
	for range pumpRounds {
		n, err := sysPeek(src.fd, l.buf)
		if ended, open := l.readEnded(c, src, dst, n, err); ended {
			return open
		}
		w, err := sysWrite(dst.fd, l.buf[:n])
		if err != nil && err != unix.EAGAIN {
			l.closeEnd(c, dst, err)
			return false
		}
		w = max(w, 0)
		if err := sysDiscard(src.fd, w); err != nil {
			l.closeEnd(c, src, err)
			return false
		}
		l.moved(c, src, w, false)
		if w < n {
			src.blocked = true
			return true
		}
		if n < len(l.buf) && !hup {
			return true
		}
	}
	return true
}

// readEnded deals with a read from src that brought no bytes: none there yet (EAGAIN), an
// error (c is closed), or the EOF (passEOF). It reports whether the read ended the pump, and
// what pump returns then.
func (l *loop) readEnded(c *conn, src, dst *end, n int, err error) (ended, open bool) {
	switch {
	case err == unix.EAGAIN:
		return true, true
	case err != nil:
		l.closeEnd(c, src, err)
		return true, false
	case n == 0:
		return true, l.passEOF(c, src, dst)
	}
	return false, true
}

// passEOF ends the flow from src, which has read its EOF: the half-close goes on to dst, and
// the other direction goes on until its own EOF. False if that was done too and c is closed.
func (l *loop) passEOF(c *conn, src, dst *end) bool {
	src.eof = true
	if c.firstFIN == 0 {
		c.firstFIN = int8(c.sideOf(src)) + 1
	}
	if dst.eof {
		l.close(c, nil) // both directions are done
		return false
	}
	sysShutdownWrite(dst.fd)
	return true
}

func (l *loop) moved(c *conn, src *end, n int, spliced bool) {
	src.moved += uint64(n)
	if spliced {
		l.spliced.Add(uint64(n))
	}
	c.lastActive = l.now
}

// rearm makes each socket's epoll interest match what its flows wait for: readable when its
// own flow can take bytes, writable when the other flow has bytes stuck for it. It returns
// false if it closed c.
func (l *loop) rearm(c *conn) bool {
	if l.ev.flows(l, c) {
		return true
	}
	for side := range c.ends {
		en, other := &c.ends[side], &c.ends[1-side]
		var want uint32
		if !en.eof && en.pending == 0 && !en.blocked && !(side == backendSide && c.rh.holdsBackend()) {
			want |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if other.pending > 0 || other.blocked || side == clientSide && c.rh.waitsForClient() {
			want |= unix.EPOLLOUT
		}
		switch {
		case want == 0 && !en.eof:
			// Stalled: its flow waits for the other socket. A hang-up or error here would be
			// reported on every wait meanwhile; the reads that follow the stall find it.
			l.unwatch(c, side)
		case want != en.events || !en.watched:
			// An end at EOF stays in the set, even with no interest, to hear of its peer's reset.
			if !l.watchOrClose(c, side, want) {
				return false
			}
		}
	}
	return true
}
