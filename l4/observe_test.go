//go:build linux

package l4

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"lb/accesslog"
	"lb/metrics"
	"lb/ring"
	"lb/route"
)

// collect is one scrape's view of s.
func collect(s *Server) metrics.Snapshot {
	var snap metrics.Snapshot
	s.Collect(&snap)
	return snap
}

func backendRow(snap metrics.Snapshot, id string) metrics.Backend {
	for _, b := range snap.Backends {
		if b.ID == id {
			return b
		}
	}
	return metrics.Backend{}
}

// TestMetricsCountConnections: 30 requests over 3 backends give 10 connections each, with
// the bytes each way as sent, GET counted per backend, and every connection closed; a dead
// backend's failed dials and the retries they cause are counted.
func TestMetricsCountConnections(t *testing.T) {
	names := []string{"alpha", "beta", "gamma"}
	var addrs []string
	for _, n := range names {
		addrs = append(addrs, startBackend(t, httpName(n)).addr())
	}
	s := startServer(t, testConfig(), addrs...)
	const req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
	for range 30 {
		if status, _ := get(t, s.addr, ""); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	waitFor(t, "every connection closed", func() bool { return s.Stats().Active == 0 })
	snap := collect(s.Server)
	if snap.Accepted != 30 || snap.Active != 0 || snap.Sniff[metrics.SniffHTTP1] != 30 || snap.Durations.Count() != 30 {
		t.Errorf("accepted %d, active %d, http1 %d, durations %d: want 30, 0, 30, 30",
			snap.Accepted, snap.Active, snap.Sniff[metrics.SniffHTTP1], snap.Durations.Count())
	}
	for i, n := range names {
		b := backendRow(snap, fmt.Sprintf("b%d", i))
		answer := int64(len(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(n), n)))
		if b.Connections != 10 || b.Active != 0 || b.HTTP[metrics.MethodGet] != 10 || !b.Up ||
			b.BytesSent != uint64(10*len(req)) || b.BytesReceived != uint64(10*answer) {
			t.Errorf("backend %s: %+v; want 10 connections, 10 GET, %d bytes sent, %d received", b.ID, b, 10*len(req), 10*answer)
		}
	}

	// A backend that refuses: its dials fail, and the next backend's dial is a retry.
	dead := pathsDeadAddr(t)
	s2 := startServer(t, testConfig(), dead, addrs[0])
	for range 4 {
		get(t, s2.addr, "")
	}
	waitFor(t, "every connection closed", func() bool { return s2.Stats().Active == 0 })
	snap = collect(s2.Server)
	if d, a := backendRow(snap, "b0"), backendRow(snap, "b1"); d.DialErrors != 2 || d.Connections != 0 || a.Connections != 4 || a.Retries != 2 {
		t.Errorf("dead backend %+v, live one %+v: want 2 dial errors, and 4 connections with 2 retries", d, a)
	}
}

// TestMetricsCountRefusals: no backend up gives 503s; the sniff kinds of non-HTTP clients.
func TestMetricsCountRefusals(t *testing.T) {
	b := startBackend(t, echo)
	s := startServer(t, testConfig(), b.addr())
	s.ring.SetUp("b0", false)
	for range 3 {
		if status, _ := get(t, s.addr, ""); status != 503 {
			t.Fatalf("status %d, want 503", status)
		}
	}
	s.ring.SetUp("b0", true)
	c := dial(t, s.addr)
	c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5}) // a TLS record
	c.CloseWrite()
	io.ReadAll(c)
	waitFor(t, "every connection closed", func() bool { return s.Stats().Active == 0 })
	snap := collect(s.Server)
	if snap.Refused[metrics.RefuseNoneUp] != 3 || snap.Answers[metrics.Answer503] != 3 || snap.Sniff[metrics.SniffTLS] != 1 {
		t.Errorf("refused %v, answers %v, sniff %v: want 3 none_up, 3 503s, 1 tls", snap.Refused, snap.Answers, snap.Sniff)
	}
}

// TestMetricsCountStickyDecisions: a cookie naming an up backend is a hit, one naming no
// backend is invalid, none is a miss.
func TestMetricsCountStickyDecisions(t *testing.T) {
	s := startServer(t, stickyConfig(), startBackend(t, httpName("a")).addr(), startBackend(t, httpName("b")).addr())
	get(t, s.addr, "Cookie: lb_srv=b1\r\n")
	get(t, s.addr, "Cookie: lb_srv=nobody\r\n")
	get(t, s.addr, "")
	waitFor(t, "every connection closed", func() bool { return s.Stats().Active == 0 })
	snap := collect(s.Server)
	want := [metrics.NumStickyResults]uint64{metrics.StickyHit: 1, metrics.StickyInvalid: 1, metrics.StickyMiss: 1}
	if snap.Sticky != want {
		t.Errorf("sticky decisions %v, want %v", snap.Sticky, want)
	}
}

// TestAccessLogLinePerConnection: N connections give N lines, each with its client, listener,
// backend, request, bytes and cause.
func TestAccessLogLinePerConnection(t *testing.T) {
	path := t.TempDir() + "/access.log"
	log, err := accesslog.Open(accesslog.Config{Dest: path, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.AccessLog = log
	s := startServer(t, cfg, startBackend(t, httpName("alpha")).addr())
	var clients []string
	for i := range 5 {
		c := dial(t, s.addr)
		clients = append(clients, c.LocalAddr().String())
		fmt.Fprintf(c, "GET /item/%d?q=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n", i)
		c.CloseWrite()
		io.ReadAll(c)
		c.Close()
	}
	waitFor(t, "every connection closed", func() bool { return s.Stats().Active == 0 })
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	rawBytes, _ := os.ReadFile(path)
	raw := string(rawBytes)
	for _, l := range strings.Split(strings.TrimSpace(raw), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 5 {
		t.Fatalf("%d lines for 5 connections:\n%s", len(lines), raw)
	}
	answer := float64(len("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalpha"))
	for i, m := range lines {
		want := map[string]any{"client": clients[i], "listener": s.addr, "backend": "b0", "sniff": "http1",
			"method": "GET", "host": "shop.test", "path": fmt.Sprintf("/item/%d?q=1", i),
			"bytes_down": answer, "cause": "client_closed"}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("line %d: %s = %v, want %v (%v)", i, k, m[k], v, m)
			}
		}
	}
}

// TestPassiveCheckCountsAResetBeforeTheFirstByte: a backend that takes the connection and
// resets it before it sends a byte is reported like a failed dial; one that answers first is
// not.
func TestPassiveCheckCountsAResetBeforeTheFirstByte(t *testing.T) {
	var answer atomic.Bool
	got := make(chan struct{}, 1) // the client has the backend's first bytes
	b := startBackend(t, func(c *net.TCPConn) {
		buf := make([]byte, 64)
		c.Read(buf)
		if answer.Load() {
			io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			<-got // a reset would take them with it
		}
		c.SetLinger(0)
		c.Close()
	})
	cfg := testConfig()
	var failures atomic.Int64
	cfg.OnDialFailure = func(ring.Backend) { failures.Add(1) }
	s := startServer(t, cfg, b.addr())
	for _, answers := range []bool{false, true} {
		answer.Store(answers)
		c := dial(t, s.addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if answers {
			c.Read(make([]byte, 64))
			got <- struct{}{}
		}
		io.ReadAll(c)
		waitFor(t, "the connection closed", func() bool { return s.Stats().Active == 0 })
	}
	if n := failures.Load(); n != 1 {
		t.Fatalf("%d failures reported, want 1: the reset before any byte only", n)
	}
}

// TestSameBackendIDInTwoPoolsCountsApart: one id in two pools is two rows, each with its
// pool's traffic, not their sum.
func TestSameBackendIDInTwoPoolsCountsApart(t *testing.T) {
	var pools []Pool
	for _, name := range []string{"a", "b"} {
		r, err := ring.New(ring.Backend{ID: "web", Addr: startBackend(t, httpName(name)).addr(), Weight: 1})
		if err != nil {
			t.Fatal(err)
		}
		pools = append(pools, Pool{Name: name, Ring: r})
	}
	cfg := testConfig()
	cfg.Pools = pools
	host := func(s string) route.Match {
		n, err := route.ParseName(s)
		if err != nil {
			t.Fatal(err)
		}
		return route.Match{Host: []route.Name{n}}
	}
	table, err := route.New([]route.Route{{Match: host("a.test"), Pool: 0}, {Match: host("b.test"), Pool: 1}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	go s.ServeRoutes(ln, Routes{Table: table})
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	for i := range 3 {
		for _, h := range []string{"a.test", "b.test", "b.test"} {
			c := dial(t, ln.Addr().String())
			fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, h)
			io.ReadAll(c)
			c.Close()
		}
	}
	waitFor(t, "every connection closed", func() bool { return s.Stats().Active == 0 })
	snap := collect(s)
	got := map[string]uint64{}
	for _, b := range snap.Backends {
		got[b.Pool+"/"+b.ID] = b.Connections
	}
	if len(snap.Backends) != 2 || got["a/web"] != 3 || got["b/web"] != 6 {
		t.Errorf("rows %v, want a/web 3 and b/web 6", got)
	}
}
