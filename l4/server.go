// Package l4 accepts TCP connections, routes each one to a backend after sniffing its
// first bytes, and moves bytes both ways until both sides are done.
//
// The life of one connection is in conn.go. Once a connection is routed it belongs to
// the splice engine (engine_linux.go): no goroutine and no pipe is held for it while it
// is idle, so a held connection costs two file descriptors and a few hundred bytes.
package l4

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"lb/ring"
)

// ErrServerClosed is returned by Serve after Shutdown has been called.
var ErrServerClosed = errors.New("l4: server closed")

// Config is everything a Server needs. Zero durations mean "no limit" except where noted.
type Config struct {
	Ring           *ring.Ring
	SniffTimeout   time.Duration // how long to wait for a complete request head; > 0
	MaxHeaderBytes int           // size of the sniff buffer; > 0
	ConnectTimeout time.Duration // per backend dial
	IdleTimeout    time.Duration // close a routed connection with no traffic either way for this long
	// OnDialFailure, if set, hears of every failed backend dial (health counts it as a failed probe).
	OnDialFailure func(ring.Backend)
	Log           zerolog.Logger
}

// Stats are cumulative counters of a Server.
type Stats struct {
	Accepted      uint64 // connections accepted
	Active        int64  // connections accepted and not yet closed
	SplicedBytes  uint64 // bytes moved by splice(2) between client and backend, both ways
	PipesInUse    int64  // splice pipes held right now (by the engine's loops and by stalled flows)
	IdleTimeouts  uint64 // connections closed by --idle-timeout
	RefusedNoneUp uint64 // HTTP clients answered 503: no backend up
	RefusedDial   uint64 // HTTP clients answered 502: every dial failed
}

// Server routes connections accepted from one or more listeners. Create it with New.
type Server struct {
	cfg    Config
	log    zerolog.Logger
	dialer net.Dialer
	bufs   sync.Pool // *[]byte of cfg.MaxHeaderBytes: sniff buffers, returned once the head is replayed
	engine *engine

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	closing   chan struct{} // closed by Shutdown
	serving   sync.WaitGroup
	conns     sync.WaitGroup // one count per accepted connection until it is closed

	accepted      atomic.Uint64
	active        atomic.Int64
	refusedNoneUp atomic.Uint64
	refusedDial   atomic.Uint64
}

// New returns a Server for cfg. It starts the splice engine's loops, which Shutdown stops.
func New(cfg Config) (*Server, error) {
	if cfg.Ring == nil || cfg.SniffTimeout <= 0 || cfg.MaxHeaderBytes <= 0 {
		return nil, errors.New("l4: config needs a Ring, a SniffTimeout and a MaxHeaderBytes")
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Log,
		dialer:    net.Dialer{Timeout: cfg.ConnectTimeout},
		listeners: make(map[net.Listener]struct{}),
		closing:   make(chan struct{}),
	}
	s.bufs.New = func() any { b := make([]byte, cfg.MaxHeaderBytes); return &b }
	e, err := newEngine(cfg.IdleTimeout, s.connClosed, cfg.Log)
	if err != nil {
		return nil, err
	}
	s.engine = e
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := s.engine.stats()
	st.Accepted = s.accepted.Load()
	st.Active = s.active.Load()
	st.RefusedNoneUp = s.refusedNoneUp.Load()
	st.RefusedDial = s.refusedDial.Load()
	return st
}

// Serve accepts connections on ln until Shutdown, and routes each one in its own goroutine
// until the splice engine takes it over. Temporary accept errors (EMFILE, ENFILE, ...)
// back off from 5 ms doubling to 1 s, keep serving open connections and never spin.
// It returns ErrServerClosed after Shutdown, or the listener's error if it fails for good.
func (s *Server) Serve(ln net.Listener) error {
	if !s.track(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.serving.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.closing:
				return ErrServerClosed
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = nextBackoff(backoff)
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
			select {
			case <-time.After(backoff):
			case <-s.closing:
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok { // the engine needs a socket it can splice from
			s.log.Error().Str("type", c.RemoteAddr().Network()).Msg("listener gave a non-TCP connection; closed")
			c.Close()
			continue
		}
		s.accepted.Add(1)
		s.active.Add(1)
		s.conns.Add(1)
		go s.route(tc)
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	if d *= 2; d > time.Second {
		d = time.Second
	}
	return d
}

// track registers ln unless the server is shutting down; it reserves a place in s.serving.
func (s *Server) track(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return false
	default:
	}
	s.listeners[ln] = struct{}{}
	s.serving.Add(1)
	return true
}

// connClosed is called exactly once per accepted connection, when it is closed.
func (s *Server) connClosed() {
	s.active.Add(-1)
	s.conns.Done()
}

// Shutdown stops accepting, waits for open connections to finish until ctx is done, then
// closes whatever is left and stops the splice engine. It returns ctx.Err() if connections
// had to be cut, nil if they all finished, ErrServerClosed if called again. Shutdown is shaped like net/http's Server.Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		return ErrServerClosed
	default:
	}
	close(s.closing)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.serving.Wait() // no Accept is running, so no conns.Add can race with the Wait below

	drained := make(chan struct{})
	go func() { s.conns.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
		s.engine.closeAll()
		// Connections still being routed end within SniffTimeout+ConnectTimeout; the engine
		// closes them as soon as they are handed over.
		<-drained
	}
	s.engine.stop()
	return err
}
