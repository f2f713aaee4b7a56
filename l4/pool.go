//go:build linux

package l4

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"lb/httpsniff"
	"lb/proxyhdr"
	"lb/ring"
	"lb/route"
)

// Pool is a set of backends that routes send connections to, with its own settings.
type Pool struct {
	Name      string
	Ring      *ring.Ring
	Sticky    Sticky           // off when zero
	SendProxy proxyhdr.Version // the PROXY header sent to its backends; None: none
	// ConnectTimeout and IdleTimeout override Config's when above 0.
	ConnectTimeout, IdleTimeout time.Duration
	// OnDialFailure, if set, hears of every failed dial of a backend of the pool, and of
	// every connection a backend reset before its first byte (health counts both as failed
	// probes). It runs on a loop: it must not block.
	OnDialFailure func(ring.Backend)
}

// pool is a Pool as the loops use it.
type pool struct {
	Pool
	localStore bool // Sticky.Sessions answers without I/O: called on the loops
}

var errNoRoute = errors.New("no route matches")

// newPools checks cfg's pools, or makes the one that Ring, Sticky, SendProxy and
// OnDialFailure describe when there are none.
func newPools(cfg Config) ([]*pool, error) {
	pools := cfg.Pools
	if len(pools) == 0 {
		pools = []Pool{{Name: "default", Ring: cfg.Ring, Sticky: cfg.Sticky, SendProxy: cfg.SendProxy, OnDialFailure: cfg.OnDialFailure}}
	}
	var out []*pool
	for _, p := range pools {
		if p.Ring == nil {
			return nil, fmt.Errorf("l4: pool %q needs a Ring", p.Name)
		}
		if p.Sticky.SessionCookie != "" && (p.Sticky.Sessions == nil || p.Sticky.Keyer == nil) {
			return nil, fmt.Errorf("l4: pool %q: Sticky.SessionCookie needs Sessions and a Keyer", p.Name)
		}
		if p.ConnectTimeout <= 0 {
			p.ConnectTimeout = cfg.ConnectTimeout
		}
		if p.IdleTimeout <= 0 {
			p.IdleTimeout = cfg.IdleTimeout
		}
		out = append(out, &pool{Pool: p, localStore: isLocal(p.Sticky.Sessions)})
	}
	return out, nil
}

// Routes says where a listener sends its connections: the pool of the first route whose
// match holds (Table indexes Config.Pools), else NoMatchStatus for an HTTP client (503 when
// 0), and a close for others.
type Routes struct {
	Table         *route.Table
	NoMatchStatus int
}

// noMatchAnswer is the answer to an HTTP client no route matches.
func noMatchAnswer(status int) []byte {
	if status == 0 {
		status = http.StatusServiceUnavailable
	}
	body := "no route for this request\n"
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// choosePool is the route stage's first step: the pool of the first of the listener's routes
// that matches c, or nil.
func (l *loop) choosePool(c *conn) *pool {
	rs := c.lis.routes.Load()
	t := rs.table
	if t == nil {
		return rs.pools[0]
	}
	rt := c.rt
	rc := route.Conn{
		Protocol: route.ProtocolOf(c.kind, c.kind == httpsniff.KindHTTP1 || httpsniff.StartsLikeHTTP1(rt.first.bytes())),
		H2C:      c.kind == httpsniff.KindHTTP2,
		Source:   c.client.Addr(),
	}
	if c.kind == httpsniff.KindHTTP1 && rt.sniffErr == nil {
		rc.Head = &rt.req
	}
	if rt.helloOK {
		rc.Hello = &l.hello
	}
	if _, i := t.Match(&rc); i >= 0 {
		return rs.pools[i]
	}
	return nil
}

// readHello reads a TLS ClientHello whole when the listener routes on SNI or ALPN. It
// reports whether sniffing must wait for more of it.
func (l *loop) readHello(c *conn) (more bool) {
	rt := c.rt
	h, err := rt.hello.Parse(rt.first.bytes())
	switch {
	case errors.Is(err, httpsniff.ErrNeedMore):
		return rt.first.n < l.s.cfg.MaxHeaderBytes
	case err == nil:
		l.hello, rt.helloOK = h, true
	}
	return false
}
