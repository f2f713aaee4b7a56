package httpsniff

import (
	"fmt"
	"io"
	"time"
)

// Conn is what Sniff reads from; a *net.TCPConn satisfies it.
type Conn interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}

// maxEmptyReads bounds a Conn that keeps returning 0, nil, as io.Reader allows but a socket
// never does.
const maxEmptyReads = 100

// Sniff reads the first bytes of c into buf until Parse decides (a complete HTTP/1.x head or a
// non-HTTP/1.x kind), buf is full, the deadline passes or a read fails. It sets c's read
// deadline first and clears it before returning, whatever happens, so that the rest of the
// connection runs without it.
//
// It returns the number of bytes read: buf[:n] are exactly the bytes the client sent, in
// order, and nothing else was taken from c, so the caller forwards buf[:n] before anything
// else. The Head's slices point into buf. err == nil means the Kind is decided (KindHTTP1
// with a complete head, KindHTTP2, KindTLS or KindOther); otherwise err is ErrHeadTooLarge,
// ErrMalformed, an error wrapping os.ErrDeadlineExceeded (a slow or silent client), io.EOF
// (the client closed its write side) or another read error; when a failed read ended it,
// the Kind is KindEmpty if no byte had arrived, else KindUnknown.
//
// It never reads past buf, treats no single Read as a whole head, and parses each byte about
// once however the head is split. It does not allocate when c is a *net.TCPConn.
func Sniff(c Conn, buf []byte, deadline time.Time) (Head, int, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return Head{}, 0, fmt.Errorf("httpsniff: set read deadline: %w", err)
	}
	h, n, err := readHead(c, buf)
	// Cleared here, not deferred by the caller: a deadline left on would cut the
	// spliced session later.
	if cerr := c.SetReadDeadline(time.Time{}); cerr != nil && err == nil {
		err = fmt.Errorf("httpsniff: clear read deadline: %w", cerr)
	}
	return h, n, err
}

func readHead(c Conn, buf []byte) (Head, int, error) {
	var p parser
	n, empty := 0, 0
	for {
		if n == len(buf) {
			return Head{}, n, ErrHeadTooLarge
		}
		m, err := c.Read(buf[n:])
		n += m
		if m > 0 {
			empty = 0
			// A read may bring the last bytes and an error together: decide on the bytes first.
			if h, perr := p.parse(buf[:n]); perr != ErrNeedMore {
				return h, n, perr
			}
		}
		if err != nil {
			var h Head
			if n == 0 {
				h.Kind = KindEmpty
			}
			return h, n, err
		}
		if m == 0 {
			if empty++; empty == maxEmptyReads {
				return Head{}, n, io.ErrNoProgress
			}
		}
	}
}
