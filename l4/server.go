//go:build linux

package l4

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"lb/accesslog"
	"lb/admit"
	"lb/dnswatch"
	"lb/proxyhdr"
	"lb/ring"
)

// ErrServerClosed is returned by Serve after Shutdown has been called.
var ErrServerClosed = errors.New("l4: server closed")

// Config is everything a Server needs.
type Config struct {
	// Pools are where routes send connections (Routes.Table indexes them); Serve sends every
	// connection to the first. Without Pools, Ring, Sticky, SendProxy and OnDialFailure make
	// the one pool.
	Pools        []Pool
	Ring         *ring.Ring
	SniffTimeout time.Duration // how long to wait for a complete request head; > 0
	// CloseSlowHeads closes a connection whose first bytes are not decided within SniffTimeout
	// (a slowloris, a silent client) instead of routing it with what came.
	CloseSlowHeads bool
	MaxHeaderBytes int           // size of the sniff buffer; > 0
	ConnectTimeout time.Duration // per backend dial; > 0
	IdleTimeout    time.Duration // close a routed connection with no traffic either way for this long; 0: never
	ResolveEvery   time.Duration // how often backend names are looked up again; 0: 30s
	Resolver       *net.Resolver // where backend names are looked up; nil: net.DefaultResolver
	// OnDialFailure, if set, hears of every failed backend dial (health counts it as a failed
	// probe). It runs on a loop: it must not block.
	OnDialFailure func(ring.Backend)
	Sticky        Sticky // off when zero
	// MaxConns bounds the connections accepted and not yet closed: at it, lb stops accepting
	// and the kernel's listen backlog holds new clients until one closes. 0: derived from the
	// open-files limit (RLIMIT_NOFILE), two descriptors a connection, after ReservedFDs and
	// what the loops and their spare pipes hold.
	MaxConns    int
	ReservedFDs int // descriptors the rest of the process may hold: probes, Redis, listeners, logs
	// MaxHeadMemory bounds the bytes of the buffers that hold heads (first bytes, sticky
	// response heads) across all connections; a head that would pass it goes on unparsed.
	// 0: 4 KiB a connection of MaxConns, from 16 MiB to 256 MiB.
	MaxHeadMemory int64
	AccessLog     *accesslog.Logger // nil: off
	// AcceptProxy lists the balancers whose connections start with a PROXY header: its source
	// is the client. Another peer's bytes are never read as one.
	AcceptProxy proxyhdr.Trusted
	SendProxy   proxyhdr.Version // the PROXY header sent to backends; None: none
	// PerIP limits the connections of each client address; zero: none. Its MaxEntries is
	// raised to admit.DefaultMaxEntries, and to twice MaxConns, if below.
	PerIP admit.Config
	// QueueTimeout is how long a connection waits for a slot when every backend up is at
	// its MaxConn; then it is refused (503). 0: 1s.
	QueueTimeout time.Duration
	// Engine is how the loops hear of events and move bytes; auto (the zero value) is
	// io_uring where the kernel allows it. New fails with ErrUringUnavailable for EngineUring
	// where io_uring is refused.
	Engine Engine
	Log    zerolog.Logger
}

// Stats are counters of a Server.
type Stats struct {
	Active        int64  // connections accepted and not yet closed
	SplicedBytes  uint64 // bytes moved by splice(2) between client and backend, both ways
	PipesInUse    int64  // splice pipes held now: at most one per loop, plus one per stalled flow
	IdleTimeouts  uint64 // connections closed by IdleTimeout
	MaxConns      int64  // Config.MaxConns, or the limit derived from the open-files limit
	HeadBytes     int64  // bytes of head buffers held by connections now
	HeadsUnparsed uint64 // heads that went on unparsed, or reads deferred, at MaxHeadMemory
	BuffersHeld   int64  // io_uring: provided buffers holding bytes on their way now
	BufferWaits   uint64 // io_uring: receives that found every buffer taken, and waited for one
}

// Server routes the connections of its listeners. Create it with New; Shutdown stops it.
type Server struct {
	cfg      Config
	log      zerolog.Logger
	loops    []*loop
	resolver *resolver
	pipes    pipePool

	pools      atomic.Pointer[[]*pool] // the pools new connections are routed to
	lis        []*listener             // under mu
	storeCalls sync.WaitGroup          // calls to the session store made off the loops

	mu        sync.Mutex
	listeners []net.Listener
	closing   chan struct{} // closed by Shutdown
	conns     sync.WaitGroup

	active         atomic.Int64 // connections accepted and not yet closed: the MaxConns gate
	headHeld       atomic.Int64 // bytes of head buffers connections hold (headbuf.go)
	headLimit      int64
	overHeadMemory atomic.Uint64
	short          atomic.Bool // a dial found lb out of descriptors, and none has worked since
	maxConns       int64
	atLimit        atomic.Bool   // accepting stopped at maxConns, and has not started again
	badMoves       atomic.Uint64 // transitions not in the phase table: 0, or a bug (phase.go)
	admit          *admit.Table  // nil: no per-address limit
	engine         Engine        // cfg.Engine resolved: epoll or uring
}

// Engine is the engine the loops run: EngineEpoll or EngineUring.
func (s *Server) Engine() Engine { return s.engine }

// full reports whether the server holds as many connections as it may.
func (s *Server) full() bool { return s.active.Load() >= s.maxConns }

// limitReached logs, once per episode, that accepting stopped at the connection limit.
func (s *Server) limitReached() {
	if !s.atLimit.Load() && !s.atLimit.Swap(true) {
		s.log.Warn().Int64("max_conns", s.maxConns).Msg("connection limit reached: new clients wait in the listen backlog")
	}
}

// limitLeft ends the episode.
func (s *Server) limitLeft() {
	if s.atLimit.Load() && s.atLimit.Swap(false) {
		s.log.Info().Msg("below the connection limit: accepting again")
	}
}

// headMemory is cfg.MaxHeadMemory, or 4 KiB a connection, from 16 MiB to 256 MiB, and room
// for a few of the largest heads.
func headMemory(cfg Config, maxConns int64) int64 {
	if cfg.MaxHeadMemory > 0 {
		return cfg.MaxHeadMemory
	}
	return max(min(max(4<<10*maxConns, 16<<20), 256<<20), 4*int64(headCap(cfg.MaxHeaderBytes+copySize)))
}

// ownFDs is what the loops and the pipe pool may hold besides connections: per loop its
// engine's descriptors (loopFDs) and its hot pipe; the pool's spare pipes; the Go
// netpoller's epoll set and its eventfd.
func ownFDs(loops, spares int) int { return (maxLoopFDs+2)*loops + 2*spares + 2 }

// loopFDs is what a loop's engine holds: its eventfd, and an epoll set (epoll), or a ring and
// the epoll set of its ends at EOF (io_uring).
func loopFDs(e Engine) int {
	if e == EngineUring {
		return maxLoopFDs
	}
	return 2
}

const maxLoopFDs = 3

// connLimit is cfg.MaxConns, or what the open-files limit leaves: two descriptors a
// connection after the reserve; and how many spare pipes the pool keeps. Under a limit too
// low for the whole reserve, half the descriptors are kept for connections: what else
// needs one (a probe, a spare pipe) waits for it or does without, as it does whenever lb
// runs short.
func connLimit(cfg Config, loops int) (conns int64, spares int, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, opError("getrlimit", err)
	}
	spares = sparePipes(lim.Cur)
	if cfg.MaxConns > 0 {
		return int64(cfg.MaxConns), spares, nil
	}
	reserve := min(uint64(cfg.ReservedFDs+ownFDs(loops, spares)), lim.Cur/2)
	if n := int64(lim.Cur-reserve) / 2; n >= 1 {
		return n, spares, nil
	}
	return 0, 0, fmt.Errorf("l4: the open-files limit %d leaves no room for connections: raise it (ulimit -n)", lim.Cur)
}

// startShortage logs, once per episode, that lb has no descriptor for a backend socket.
func (s *Server) startShortage(err error) {
	if !s.short.Load() && !s.short.Swap(true) {
		s.log.Warn().Err(err).Msg("out of descriptors: new connections wait for one; raise the open-files limit")
	}
}

// endShortage ends the episode: a backend socket was had again.
func (s *Server) endShortage() {
	if s.short.Load() && s.short.Swap(false) {
		s.log.Info().Msg("descriptors available again")
	}
}

// New returns a Server for cfg and starts its loops, one per GOMAXPROCS.
func New(cfg Config) (*Server, error) {
	if cfg.SniffTimeout <= 0 || cfg.MaxHeaderBytes <= 0 || cfg.ConnectTimeout <= 0 {
		return nil, errors.New("l4: config needs a SniffTimeout, a MaxHeaderBytes and a ConnectTimeout")
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = time.Second
	}
	engine, err := resolveEngine(cfg.Engine)
	if err != nil {
		return nil, err
	}
	pools, err := newPools(cfg)
	if err != nil {
		return nil, err
	}
	maxConns, spares, err := connLimit(cfg, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, closing: make(chan struct{}), maxConns: maxConns, engine: engine}
	s.pipes.maxFree = spares
	s.pools.Store(&pools)
	s.headLimit = headMemory(cfg, maxConns)
	perIP := cfg.PerIP
	perIP.MaxEntries = max(perIP.MaxEntries, admit.DefaultMaxEntries, int(min(2*maxConns, 1<<30)))
	s.admit = admit.New(perIP)
	var rings []*ring.Ring
	for _, p := range pools {
		rings = append(rings, p.Ring)
	}
	s.resolver = newResolver(dnswatch.Config{Every: cfg.ResolveEvery, Resolver: cfg.Resolver}, rings, cfg.Log)
	for range runtime.GOMAXPROCS(0) {
		l, err := newLoop(s)
		if err != nil {
			for _, l := range s.loops {
				l.release()
			}
			s.resolver.stop()
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		go l.run()
	}
	for _, l := range s.loops {
		if err = errors.Join(err, <-l.started); err != nil {
			break
		}
	}
	if err != nil { // a ring could not be set up on its loop's thread
		for _, l := range s.loops {
			l.call(l.stop)
			<-l.done
			l.release()
		}
		s.resolver.stop()
		return nil, err
	}
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Active:        s.active.Load(),
		PipesInUse:    s.pipes.inUse.Load(),
		MaxConns:      s.maxConns,
		HeadBytes:     s.headHeld.Load(),
		HeadsUnparsed: s.overHeadMemory.Load(),
	}
	for _, l := range s.loops {
		st.SplicedBytes += l.spliced.Load()
		st.IdleTimeouts += l.idleTimeouts.Load()
		st.BuffersHeld += l.buffersHeld.Load()
		st.BufferWaits += l.bufferWaits.Load()
	}
	return st
}

// Serve has the loops accept connections from ln until Shutdown, and returns
// ErrServerClosed then. ln must be a *net.TCPListener: the loops accept from its socket
// directly. Temporary accept errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) pause accepting on
// that loop from 5 ms doubling to 1 s, while open connections go on being served.
func (s *Server) Serve(ln net.Listener) error { return s.ServeRoutes(ln, Routes{}) }

// ServeRoutes is Serve with routes: each connection goes to the pool of the first route
// that matches it. A zero Routes sends every connection to the first pool.
func (s *Server) ServeRoutes(ln net.Listener, routes Routes) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return errors.New("l4: Serve needs a *net.TCPListener")
	}
	fd, err := listenerFD(tl)
	if err != nil {
		return err
	}
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		ln.Close() // as net/http does: a listener no one accepts from must not queue clients
		return ErrServerClosed
	default:
	}
	s.listeners = append(s.listeners, ln)
	lis := &listener{fd: fd, name: ln.Addr().String()}
	lis.routes.Store(newRouteSet(routes, *s.pools.Load()))
	s.lis = append(s.lis, lis)
	for _, l := range s.loops {
		l.call(func() {
			l.acc.listen(lis)
			l.stats.listener(lis) // its series are scraped from the start, at 0
		})
	}
	s.mu.Unlock()
	<-s.closing
	return ErrServerClosed
}

// Listening reports how many listeners Serve and ServeRoutes have taken so far: once it
// counts one, every loop accepts from it.
func (s *Server) Listening() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lis)
}

// Reroute replaces the pools and every listener's routes at once, routes given by the
// listener's address as it listens: connections routed from now on use them, while open
// ones keep the pool they were routed to and finish there. A listener left out of routes is
// an error, and then nothing changes.
func (s *Server) Reroute(pools []Pool, routes map[string]Routes) error {
	if len(pools) == 0 {
		return errors.New("l4: Reroute needs a pool")
	}
	cfg := s.cfg
	cfg.Pools = pools
	ps, err := newPools(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lis := range s.lis {
		if _, ok := routes[lis.name]; !ok {
			return fmt.Errorf("l4: no routes for the listener %s", lis.name)
		}
	}
	var rings []*ring.Ring
	for _, p := range ps {
		rings = append(rings, p.Ring)
	}
	s.resolver.setRings(rings)
	s.pools.Store(&ps)
	for _, lis := range s.lis {
		lis.routes.Store(newRouteSet(routes[lis.name], ps))
	}
	return nil
}

// Shutdown stops accepting, waits for open connections to finish until ctx is done, then
// closes whatever is left and stops the loops. It returns ctx.Err() if connections had to
// be cut, nil if they all finished, ErrServerClosed if called again. It is shaped like
// net/http's Server.Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		return ErrServerClosed
	default:
	}
	for _, l := range s.loops {
		l.call(l.acc.stop)
	}
	// No loop accepts any more, so no conns.Add can race with the Wait below.
	for _, ln := range s.listeners {
		ln.Close()
	}
	close(s.closing)
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() { s.conns.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		if s.active.Load() > 0 { // else all finished as ctx ended: nothing is cut
			err = ctx.Err()
			for _, l := range s.loops {
				l.call(func() { l.closeAll(errShutdown) })
			}
		}
		<-drained
	}
	for _, l := range s.loops {
		l.call(l.stop)
		<-l.done
	}
	s.storeCalls.Wait() // their last act is a post to a loop: done before its eventfd closes
	for _, l := range s.loops {
		l.release()
	}
	s.pipes.drain()
	s.resolver.stop()
	return err
}
