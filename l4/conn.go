package l4

import (
	"errors"
	"io"
	"net"
	"os"
	"time"

	"lb/httpsniff"
	"lb/ring"
)

// The life of one connection: accept (Serve) → sniff → pick → dial → write peeked bytes →
// hand over to the splice engine, which moves bytes both ways and closes both sockets.

var (
	errNoneUp     = errors.New("no backend is up")
	errDialFailed = errors.New("every backend dial failed")
)

// Answers to an HTTP client that cannot be routed. Connection: close because lb does not
// parse the requests that may follow on the connection.
var (
	answer503 = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 17\r\nConnection: close\r\n\r\nno backend is up\n")
	answer502 = []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 33\r\nConnection: close\r\n\r\nno backend accepted a connection\n")
)

// route owns client until it hands it to the engine or closes it.
func (s *Server) route(client *net.TCPConn) {
	bufp := s.bufs.Get().(*[]byte)
	start := time.Now()
	head, n, sniffErr := httpsniff.Sniff(client, *bufp, start.Add(s.cfg.SniffTimeout))
	if !routable(sniffErr, n) {
		s.bufs.Put(bufp)
		if e := s.log.Debug(); e.Enabled() && !errors.Is(sniffErr, io.EOF) {
			e.Err(sniffErr).Stringer("client", client.RemoteAddr()).Msg("client failed before routing")
		}
		client.Close()
		s.connClosed()
		return
	}

	backend, server, err := s.dial()
	if err != nil {
		s.bufs.Put(bufp)
		s.refuse(client, head.Kind, err)
		return
	}
	if n > 0 {
		// The kernel's send buffer takes the head at once; replay it before any spliced byte.
		_, err = server.Write((*bufp)[:n])
	}
	s.bufs.Put(bufp)
	if err != nil {
		if e := s.log.Debug(); e.Enabled() {
			e.Err(err).Str("backend", backend.ID).Msg("backend failed before the head was replayed")
		}
		server.Close()
		client.Close()
		s.connClosed()
		return
	}
	s.engine.add(client, server, routeInfo{backend: backend.ID, sniff: head.Kind, sniffErr: sniffErr, start: start})
}

// routable reports whether a sniff outcome still gets a backend. A head that is malformed,
// too large, slow or absent is not the client's fault at L4: its bytes go through untouched.
// A client that closed before sending anything, or whose socket failed, is not routed.
func routable(err error, n int) bool {
	switch {
	case err == nil,
		errors.Is(err, httpsniff.ErrHeadTooLarge),
		errors.Is(err, httpsniff.ErrMalformed),
		errors.Is(err, os.ErrDeadlineExceeded):
		return true
	case errors.Is(err, io.EOF):
		return n > 0 // a half-closed client still gets its answer
	}
	return false
}

// dial walks the ring from its next position and returns the first backend that accepts a
// connection. Nothing was sent yet, so trying the next one is safe.
func (s *Server) dial() (ring.Backend, *net.TCPConn, error) {
	cur := s.cfg.Ring.Cursor()
	err := errNoneUp
	for b, ok := cur.Next(); ok; b, ok = cur.Next() {
		c, dialErr := s.dialer.Dial("tcp", b.Addr)
		if dialErr == nil {
			return b, c.(*net.TCPConn), nil
		}
		err = errDialFailed
		if e := s.log.Debug(); e.Enabled() {
			e.Err(dialErr).Str("backend", b.ID).Str("addr", b.Addr).Msg("dial failed, trying the next backend")
		}
		if s.cfg.OnDialFailure != nil {
			s.cfg.OnDialFailure(b)
		}
	}
	return ring.Backend{}, nil, err
}

// refuse answers an unroutable HTTP client with 503 or 502 and closes it; other clients are
// just closed. It reads what the client sends for a moment after the answer, because closing
// a socket with unread input sends RST, which can destroy the answer in flight.
func (s *Server) refuse(client *net.TCPConn, kind httpsniff.Kind, why error) {
	defer s.connClosed()
	defer client.Close()
	// Debug only: an outage would otherwise log once per connection; health logs the transitions.
	if e := s.log.Debug(); e.Enabled() {
		e.Err(why).Stringer("client", client.RemoteAddr()).Stringer("sniff", kind).Msg("connection not routed")
	}
	if kind != httpsniff.KindHTTP1 {
		return
	}
	answer := answer503
	if errors.Is(why, errDialFailed) {
		answer = answer502
		s.refusedDial.Add(1)
	} else {
		s.refusedNoneUp.Add(1)
	}
	client.SetDeadline(time.Now().Add(time.Second))
	if _, err := client.Write(answer); err != nil {
		return
	}
	client.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(client, 1<<20))
}
