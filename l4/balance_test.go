//go:build linux

package l4

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lb/metrics"
	"lb/proxyhdr"
	"lb/ring"
)

// balancedServer serves one pool of the given ring config over backends.
func balancedServer(t *testing.T, rc ring.Config, backends ...ring.Backend) string {
	t.Helper()
	r, err := ring.NewWith(rc, backends...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Pools = []Pool{{Name: "p", Ring: r}}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// slowHTTP answers each request after delay, and counts the connections it got.
func slowHTTP(delay time.Duration, conns *atomic.Int64) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		time.Sleep(delay) // the backend's work
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	}
}

// TestLeastConnAndP2CSpareASlowBackend: with one backend 20 times slower than the other,
// 1,000 requests from 100 clients at once put about half on it through roundrobin, and
// measurably fewer through leastconn and p2c, which count its open connections.
func TestLeastConnAndP2CSpareASlowBackend(t *testing.T) {
	share := map[ring.Balance]float64{}
	for _, bal := range []ring.Balance{ring.RoundRobin, ring.LeastConn, ring.P2C} {
		var slow, fast atomic.Int64
		addr := balancedServer(t, ring.Config{Balance: bal},
			ring.Backend{ID: "slow", Addr: startBackend(t, slowHTTP(100*time.Millisecond, &slow)).addr(), Weight: 1},
			ring.Backend{ID: "fast", Addr: startBackend(t, slowHTTP(5*time.Millisecond, &fast)).addr(), Weight: 1})
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range 100 {
			wg.Go(func() {
				for range 10 {
					c, err := net.DialTimeout("tcp", addr, ioDeadline)
					if err != nil {
						failed.Add(1)
						continue
					}
					c.SetDeadline(time.Now().Add(ioDeadline))
					io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
					if b, _ := io.ReadAll(c); len(b) == 0 {
						failed.Add(1)
					}
					c.Close()
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n != 0 {
			t.Fatalf("%v: %d requests failed", bal, n)
		}
		share[bal] = float64(slow.Load()) / float64(slow.Load()+fast.Load())
		t.Logf("%v: the slow backend took %d of %d connections (%.0f%%)", bal, slow.Load(), slow.Load()+fast.Load(), 100*share[bal])
	}
	if rr := share[ring.RoundRobin]; rr < 0.45 || rr > 0.55 {
		t.Errorf("roundrobin gave the slow backend %.0f%%, want half", 100*rr)
	}
	for _, bal := range []ring.Balance{ring.LeastConn, ring.P2C} {
		if share[bal] > 0.40 {
			t.Errorf("%v gave the slow backend %.0f%%, want well under roundrobin's half", bal, 100*share[bal])
		}
	}
}

// TestSourceKeepsAClientOnItsBackend: with source balancing, the same client address always
// reaches the same backend (through a trusted PROXY header, which sets the address).
func TestSourceKeepsAClientOnItsBackend(t *testing.T) {
	var counts [3]atomic.Int64
	var backends []ring.Backend
	for i := range counts {
		backends = append(backends, ring.Backend{ID: fmt.Sprint(i), Addr: startBackend(t, slowHTTP(0, &counts[i])).addr(), Weight: 1})
	}
	addr := balancedServer(t, ring.Config{Balance: ring.Source}, backends...)
	for range 12 {
		c := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		io.ReadAll(c)
		c.Close()
	}
	var used int
	for i := range counts {
		if counts[i].Load() > 0 {
			used++
		}
	}
	if used != 1 {
		t.Errorf("one client address reached %d backends, want 1", used)
	}
}

// TestMaxConnQueuesThenRefuses: a backend at its maxconn takes no new connection; the next
// one waits for a slot and gets it when one closes, or a 503 after QueueTimeout.
func TestMaxConnQueuesThenRefuses(t *testing.T) {
	gate := make(chan struct{}, 8) // a token lets one request be answered
	var conns atomic.Int64
	b := startBackend(t, func(c *net.TCPConn) {
		conns.Add(1)
		http.ReadRequest(bufio.NewReader(c))
		<-gate
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	t.Cleanup(func() { close(gate) })
	r, err := ring.New(ring.Backend{ID: "b", Addr: b.addr(), Weight: 1, MaxConn: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Pools, cfg.QueueTimeout = []Pool{{Name: "p", Ring: r}}, 2*time.Second
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	request := func() net.Conn {
		c := dial(t, ln.Addr().String())
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		return c
	}

	first := request()
	waitFor(t, "the first connection at the backend", func() bool { return conns.Load() == 1 })
	if status, _ := get(t, ln.Addr().String(), ""); status != 503 {
		t.Fatalf("with the only backend at its maxconn past the queue timeout: %d, want 503", status)
	}
	if snap := collect(s); snap.Refused[metrics.RefuseQueueTimeout] != 1 || snap.Refused[metrics.RefuseNoneUp] != 0 {
		t.Errorf("refused %v: want the queue timeout counted as queue_timeout, not none_up", snap.Refused)
	}
	second := request()
	waitFor(t, "the second connection queued", func() bool { return phaseCount(s, queued) == 1 })
	if snap := collect(s); snap.Queued != 1 {
		t.Errorf("Queued %d with one connection waiting for a slot, want 1", snap.Queued)
	}
	gate <- struct{}{} // the first is answered; once it closes, its slot goes to the second
	gate <- struct{}{}
	for i, c := range []net.Conn{first, second} {
		if b, _ := io.ReadAll(c); string(b[max(len(b)-2, 0):]) != "ok" {
			t.Fatalf("connection %d: %q, want the backend's answer", i, b)
		}
		c.Close()
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("the backend saw %d connections, want 2: the refused one never reached it", n)
	}
}

// TestSourceKeepsMostClientsWhenABackendGoes: through lb, with the client addresses of
// 1,000 synthetic clients given by a trusted PROXY header, source hashing sends each to one
// backend of 5; after one backend is removed, at least 75% keep theirs (about 80% should:
// all but the removed one's).
func TestSourceKeepsMostClientsWhenABackendGoes(t *testing.T) {
	var backends []ring.Backend
	for i := range 5 {
		backends = append(backends, ring.Backend{ID: fmt.Sprint("b", i), Addr: startBackend(t, nameBackend(fmt.Sprint(i))).addr(), Weight: 1})
	}
	r, err := ring.NewWith(ring.Config{Balance: ring.Source}, backends...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Pools = []Pool{{Name: "p", Ring: r}}
	cfg.AcceptProxy = proxyhdr.Trusted{netip.MustParsePrefix("127.0.0.0/8")}
	s := startServer(t, cfg)
	backendOf := func(i int) string {
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), 40000)
		c := dial(t, s.addr)
		defer c.Close()
		c.Write(proxyhdr.AppendV1(nil, client, netip.MustParseAddrPort("10.255.0.1:80")))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		b, _ := io.ReadAll(c)
		return string(b[max(len(b)-1, 0):])
	}
	before := make([]string, 1000)
	for i := range before {
		before[i] = backendOf(i)
	}
	r.Remove("b4")
	kept := 0
	for i := range before {
		if backendOf(i) == before[i] {
			kept++
		}
	}
	if kept < 750 {
		t.Errorf("%d of 1,000 clients kept their backend after one of 5 was removed, want at least 750", kept)
	}
	t.Logf("%d of 1,000 clients kept their backend", kept)
}
