//go:build linux

package l4

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"lb/internal/tlstest"
	"lb/metrics"
	"lb/ring"
	"lb/route"
)

// routedServer serves one listener whose routes send a.test's requests to pool a, b.test's
// and TLS for *.b.test to pool b; anything else matches no route.
func routedServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	var pools []Pool
	for _, name := range []string{"a", "b"} {
		r, err := ring.New(ring.Backend{ID: name + "1", Addr: startBackend(t, nameBackend(name)).addr(), Weight: 1})
		if err != nil {
			t.Fatal(err)
		}
		pools = append(pools, Pool{Name: name, Ring: r, Sticky: cfg.Sticky})
	}
	cfg.Pools = pools
	name := func(s string) route.Name {
		n, err := route.ParseName(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	table, err := route.New([]route.Route{
		{Match: route.Match{Host: []route.Name{name("a.test")}}, Pool: 0},
		{Match: route.Match{Host: []route.Name{name("b.test")}}, Pool: 1},
		{Match: route.Match{SNI: []route.Name{name("*.b.test")}}, Pool: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	served := make(chan error, 1)
	go func() { served <- s.ServeRoutes(ln, Routes{Table: table, NoMatchStatus: 421}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("ServeRoutes returned %v", err)
		}
		if n := s.badMoves.Load(); n != 0 {
			t.Errorf("%d transitions off the table", n)
		}
	})
	return s, ln.Addr().String()
}

// nameBackend answers any first bytes with its name, then closes.
func nameBackend(name string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		c.Read(make([]byte, 4096))
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(name), name)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	}
}

// TestRoutesByHostAndSNI: the Host header and the TLS server name choose the pool; a
// request no route matches gets the listener's status, counted.
func TestRoutesByHostAndSNI(t *testing.T) {
	s, addr := routedServer(t, testConfig())
	for host, want := range map[string]string{"a.test": "a", "B.TEST:8080": "b", "c.test": "HTTP/1.1 421 Misdirected Request"} {
		c := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		reply, _ := io.ReadAll(c)
		c.Close()
		if got := string(reply); !strings.HasSuffix(got, "\r\n\r\n"+want) && !strings.HasPrefix(got, want) {
			t.Errorf("Host %s: %q, want %q", host, got, want)
		}
	}
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: "www.b.test", NextProtos: []string{"h2"}})
	for _, split := range []int{len(hello), 7, 700} { // whole, and cut over two reads
		c := dial(t, addr)
		c.Write(hello[:min(split, len(hello))])
		if split < len(hello) {
			time.Sleep(20 * time.Millisecond) // lb reads the first part alone
			c.Write(hello[split:])
		}
		reply, _ := io.ReadAll(c)
		c.Close()
		if got := string(reply); len(got) < 1 || got[len(got)-1] != 'b' {
			t.Errorf("TLS for www.b.test, cut at %d: %q, want pool b's answer", split, got)
		}
	}
	waitFor(t, "every connection closed", func() bool { return s.Stats().Active == 0 })
	if n := collect(s).Refused[metrics.RefuseNoRoute]; n != 1 {
		t.Errorf("no-route refusals %d, want 1", n)
	}
}

// TestStickyCookieIsPerPool: a cookie naming pool a's backend, sent on a route to pool b,
// names nothing there: pool b's ring decides and the client gets pool b's cookie.
func TestStickyCookieIsPerPool(t *testing.T) {
	_, addr := routedServer(t, stickyConfig())
	c := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: b.test\r\nCookie: lb_srv=a1\r\n\r\n")
	reply, _ := io.ReadAll(c)
	if got := string(reply); !containsAll(got, "Set-Cookie: lb_srv=b1;", "\r\n\r\nb") {
		t.Errorf("pool b with pool a's cookie: %q, want pool b's backend and cookie", got)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestRerouteKeepsOpenConnections: after Reroute, new connections go to the new pools while a
// connection routed before goes on with its backend, byte for byte.
func TestRerouteKeepsOpenConnections(t *testing.T) {
	ringOf := func(id, addr string) *ring.Ring {
		r, err := ring.New(ring.Backend{ID: id, Addr: addr, Weight: 1})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	oldRing := ringOf("old", startBackend(t, echo).addr())
	cfg := testConfig()
	cfg.Pools = []Pool{{Name: "old", Ring: oldRing}}
	s := startServer(t, cfg)
	held := dial(t, s.addr)
	io.WriteString(held, "ping")
	if _, err := io.ReadFull(held, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reroute([]Pool{{Name: "new", Ring: ringOf("new", startBackend(t, nameBackend("new")).addr())}}, nil); err == nil {
		t.Fatal("Reroute without the listener's routes: no error")
	}
	if err := s.Reroute([]Pool{{Name: "new", Ring: ringOf("new", startBackend(t, nameBackend("new")).addr())}}, map[string]Routes{s.addr: {}}); err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, s.addr, ""); status != 200 || body != "new" {
		t.Errorf("after Reroute: %d %q, want the new pool", status, body)
	}
	io.WriteString(held, "pong")
	if b := make([]byte, 4); !readFullOK(held, b) || string(b) != "pong" {
		t.Errorf("the connection routed before: %q, want its old backend's echo", b)
	}
}

func readFullOK(c net.Conn, b []byte) bool {
	_, err := io.ReadFull(c, b)
	return err == nil
}
