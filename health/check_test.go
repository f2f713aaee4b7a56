package health

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"lb/dnswatch"
	"lb/internal/dnstest"
	"lb/internal/logtest"
	"lb/ring"
)

// httpBackend is an HTTP server on 127.0.0.1 whose /health answers with status, and
// which records the Host of the last request.
type httpBackend struct {
	addr   string
	status atomic.Int32
	host   atomic.Value
}

func startHTTP(t *testing.T, status int) *httpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &httpBackend{addr: ln.Addr().String()}
	b.status.Store(int32(status))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.host.Store(r.Host)
		if r.URL.Path != "/health" || r.Method != http.MethodGet || r.Proto != "HTTP/1.1" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(int(b.status.Load()))
	})}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return b
}

func TestParseStatusRange(t *testing.T) {
	for in, want := range map[string]StatusRange{"200-399": {200, 399}, "204": {204, 204}, "100-599": {100, 599}} {
		if got, err := ParseStatusRange(in); err != nil || got != want || got.String() != in {
			t.Errorf("ParseStatusRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ok", "399-200", "99", "600", "200-", "-399", "200-399-400"} {
		if _, err := ParseStatusRange(in); err == nil {
			t.Errorf("ParseStatusRange(%q) accepted", in)
		}
	}
}

func TestHTTPCheck(t *testing.T) {
	b := startHTTP(t, 200)
	cfg := Config{Timeout: time.Second, HTTPPath: "/health"}
	res := ProbeAllWith(context.Background(), []ring.Backend{{ID: "a", Addr: b.addr}}, cfg)[0]
	if !res.Up || res.Status != 200 {
		t.Errorf("200: %+v, want up with status 200", res)
	}
	if h, _ := b.host.Load().(string); h != b.addr {
		t.Errorf("Host %q, want the backend's address %s", h, b.addr)
	}
	for _, tc := range []struct {
		status int
		expect StatusRange
		up     bool
	}{
		{302, StatusRange{}, true},
		{500, StatusRange{}, false},
		{404, StatusRange{}, false},
		{302, StatusRange{200, 200}, false},
		{503, StatusRange{500, 503}, true},
	} {
		b.status.Store(int32(tc.status))
		cfg.Expect = tc.expect
		res := ProbeAllWith(context.Background(), []ring.Backend{{ID: "a", Addr: b.addr}}, cfg)[0]
		if res.Up != tc.up || res.Status != tc.status {
			t.Errorf("status %d, expect %v: up=%v status=%d err=%v; want up=%v", tc.status, tc.expect, res.Up, res.Status, res.Err, tc.up)
		}
		if !tc.up && !errors.Is(res.Err, ErrStatus) {
			t.Errorf("status %d: error %v, want ErrStatus", tc.status, res.Err)
		}
	}

	// A backend's own check wins over the default: check=tcp is up though /health says 500,
	// check=http:/nope is down on 404 though the default is TCP.
	b.status.Store(500)
	res = ProbeAllWith(context.Background(), []ring.Backend{{ID: "a", Addr: b.addr, Check: "tcp"}}, Config{HTTPPath: "/health"})[0]
	if !res.Up || res.Status != 0 {
		t.Errorf("check=tcp: %+v, want up without a status", res)
	}
	res = ProbeAllWith(context.Background(), []ring.Backend{{ID: "a", Addr: b.addr, Check: "http:/nope"}}, Config{})[0]
	if res.Up || res.Status != 404 {
		t.Errorf("check=http:/nope: %+v, want down with 404", res)
	}
}

// A backend that accepts and never answers is down once the timeout has passed.
func TestHTTPCheckTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the kernel holds the connection in the backlog: connect succeeds
	start := time.Now()
	res := ProbeAllWith(context.Background(), []ring.Backend{{ID: "a", Addr: ln.Addr().String()}}, Config{Timeout: 200 * time.Millisecond, HTTPPath: "/health"})[0]
	if res.Up || time.Since(start) > waitFor {
		t.Errorf("silent backend: %+v after %v, want down after about 200ms", res, time.Since(start))
	}
	var ne net.Error
	if !errors.As(res.Err, &ne) || !ne.Timeout() {
		t.Errorf("silent backend: error %v, want a timeout", res.Err)
	}
}

// firstBytes accepts one connection and returns what it sent, up to n bytes or the peer's
// close, after answering with answer.
func firstBytes(t *testing.T, answer string, n int) (string, <-chan []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitFor))
		br := bufio.NewReader(c)
		buf := make([]byte, 0, n)
		for len(buf) < n && !bytes.HasSuffix(buf, []byte("\r\n\r\n")) || len(buf) < 16 {
			b, err := br.ReadByte()
			if err != nil {
				break
			}
			buf = append(buf, b)
		}
		io.WriteString(c, answer)
		got <- buf
	}()
	return ln.Addr().String(), got
}

func TestProxyHeaderBeforeCheck(t *testing.T) {
	// The PROXY v2 signature, then version 2 / LOCAL, unspecified family, no addresses.
	v2 := []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00}
	if !bytes.Equal(proxyLocalV2, v2) {
		t.Fatalf("proxyLocalV2 = % x, want % x", proxyLocalV2, v2)
	}
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	for _, tc := range []struct {
		proxy, check, prefix string
	}{
		{"v2", "http:/health", string(v2) + "GET /health HTTP/1.1\r\n"},
		{"v1", "http:/health", "PROXY UNKNOWN\r\nGET /health HTTP/1.1\r\n"},
		{"", "http:/health", "GET /health HTTP/1.1\r\n"},
		{"v2", "tcp", string(v2)},
	} {
		addr, got := firstBytes(t, ok, 512)
		res := ProbeAllWith(context.Background(), []ring.Backend{{ID: "a", Addr: addr, Proxy: tc.proxy, Check: tc.check}}, Config{Timeout: waitFor})[0]
		sent := <-got
		if !res.Up || !bytes.HasPrefix(sent, []byte(tc.prefix)) {
			t.Errorf("proxy=%q check=%s: up=%v err=%v, sent %q; want up and sent to start %q", tc.proxy, tc.check, res.Up, res.Err, sent, tc.prefix)
		}
	}
}

// With slow start, a backend that comes up logs it, and later that it is at full weight.
func TestSlowStartLogs(t *testing.T) {
	b := startHTTP(t, 500)
	r, err := ring.NewWith(ring.Config{SlowStart: 300 * time.Millisecond}, ring.Backend{ID: "a", Addr: b.addr})
	if err != nil {
		t.Fatal(err)
	}
	logs, log := logtest.New()
	p := NewProber(r, Config{Interval: 10 * time.Millisecond, Rise: 1, HTTPPath: "/health"}, log)
	p.Init(context.Background())
	if m := logs.Await(t, "backend down", waitFor); m["error"] == nil {
		t.Errorf("down line %v, want the error with the status", m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	b.status.Store(200)
	if m := logs.Await(t, "backend up", waitFor); m["slow_start"] == nil {
		t.Errorf("up line %v, want slow_start", m)
	}
	if s := r.Snapshot()[0]; s.EffectiveWeight >= 1 {
		t.Errorf("just up: weight in effect %v, want below 1 while ramping", s.EffectiveWeight)
	}
	logs.Await(t, "backend at full weight: slow start done", waitFor)
	if s := r.Snapshot()[0]; s.EffectiveWeight != 1 {
		t.Errorf("after the ramp: weight in effect %v, want 1", s.EffectiveWeight)
	}
}

func FuzzParseStatusRange(f *testing.F) {
	for _, s := range []string{"200-399", "204", "100-599", "399-200", "-", "2e2", "+200", "200 - 399"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseStatusRange(s)
		if err != nil {
			return
		}
		if r.Min < 100 || r.Max > 599 || r.Min > r.Max {
			t.Fatalf("ParseStatusRange(%q) = %v: out of bounds", s, r)
		}
		if again, err := ParseStatusRange(r.String()); err != nil || again != r {
			t.Fatalf("ParseStatusRange(%q) = %v, whose String %q reads back as %v, %v", s, r, r.String(), again, err)
		}
	})
}

// A backend's name is looked up through Config.Resolver: a name only that DNS server knows
// is probed up.
func TestCheckNameThroughResolver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the kernel holds the connection in the backlog: connect succeeds
	dns := dnstest.Start(t)
	dns.SetA("app.test", "127.0.0.1")
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cfg := Config{Timeout: waitFor, Resolver: dnswatch.Resolver(dns.Addr)}
	if res := ProbeAllWith(context.Background(), []ring.Backend{{ID: "a", Addr: "app.test:" + port}}, cfg)[0]; !res.Up {
		t.Fatalf("app.test through the resolver: %+v, want up", res)
	}
}
