package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// op is one client operation: a request, a sticky or session series, an echo transfer.
type op struct {
	kind       string
	pool       string // "http" or "echo": the lb it went through
	start, end time.Time
	bytes      int64
	err        error
}

// ledger counts operations by kind and keeps the failed ones for judging against chaos.
type ledger struct {
	mu     sync.Mutex
	kinds  map[string]*tally
	failed []op
}

type tally struct{ ops, bytes, failed, excused int64 }

func (l *ledger) add(o op) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.kinds[o.kind]
	if t == nil {
		t = &tally{}
		l.kinds[o.kind] = t
	}
	t.ops++
	t.bytes += o.bytes
	if o.err != nil && len(l.failed) < 100_000 {
		l.failed = append(l.failed, o)
	}
}

// client drives one worker's share of the load until stop is closed.
type client struct {
	rng     *rand.Rand
	httpLB  string
	echoLB  string
	ledger  *ledger
	keep    *http.Client // keep-alive connections, reused across requests
	oneShot *http.Client // a new connection per request
}

func newClient(seed uint64, httpLB, echoLB string, l *ledger) *client {
	keep := &http.Transport{MaxIdleConnsPerHost: 2, DisableCompression: true}
	once := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	return &client{
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), httpLB: httpLB, echoLB: echoLB, ledger: l,
		keep:    &http.Client{Transport: keep, Timeout: 15 * time.Second},
		oneShot: &http.Client{Transport: once, Timeout: 15 * time.Second},
	}
}

// run does random operations, weighted to a mix, until stop is closed.
func (c *client) run(stop <-chan struct{}) {
	defer c.keep.Transport.(*http.Transport).CloseIdleConnections()
	for {
		select {
		case <-stop:
			return
		default:
		}
		switch r := c.rng.IntN(100); {
		case r < 25:
			c.record("keepalive", "http", c.get(c.keep, "/", nil))
		case r < 40:
			c.record("close", "http", c.get(c.oneShot, "/", nil))
		case r < 50:
			c.sticky()
		case r < 60:
			c.session()
		case r < 85:
			c.echo("echo", c.echoSize(), false)
		case r < 92:
			c.echo("slow-echo", 0, true)
		default:
			c.badFirstPacket()
		}
	}
}

func (c *client) record(kind, pool string, o op) {
	o.kind, o.pool = kind, pool
	c.ledger.add(o)
}

// answer is what a backend said: who it was and the cookies it set.
type answer struct {
	backend string
	cookies map[string]string
}

// get sends one GET through the HTTP lb and checks the answer: 200, a body that names the
// backend of the X-Backend header.
func (c *client) get(hc *http.Client, path string, cookies map[string]string) op {
	o := op{start: time.Now()}
	_, o.bytes, o.err = c.fetch(hc, path, cookies)
	o.end = time.Now()
	return o
}

func (c *client) fetch(hc *http.Client, path string, cookies map[string]string) (answer, int64, error) {
	req, _ := http.NewRequest("GET", "http://"+c.httpLB+path, nil)
	for k, v := range cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{}, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, int64(len(body)), err
	}
	a := answer{backend: resp.Header.Get("X-Backend"), cookies: map[string]string{}}
	for _, ck := range resp.Cookies() {
		a.cookies[ck.Name] = ck.Value
	}
	if resp.StatusCode != 200 || string(body) != "backend-"+a.backend+"\n" {
		return a, int64(len(body)), fmt.Errorf("status %d, X-Backend %q, body %q", resp.StatusCode, a.backend, body)
	}
	return a, int64(len(body)), nil
}

// sticky gets lb's cookie on one connection and checks that three more connections carrying
// it reach the same backend.
func (c *client) sticky() { c.series("sticky", "/", "lb_srv") }

// session gets the application's PHPSESSID, which lb learns, and checks that three more
// connections carrying only that cookie reach the same backend.
func (c *client) session() { c.series("session", "/app", "PHPSESSID") }

func (c *client) series(kind, path, cookie string) {
	o := op{start: time.Now()}
	defer func() { o.end = time.Now(); c.record(kind, "http", o) }()
	first, n, err := c.fetch(c.oneShot, path, nil)
	o.bytes += n
	if err != nil {
		o.err = err
		return
	}
	value := first.cookies[cookie]
	if value == "" {
		o.err = fmt.Errorf("no %s cookie in the first answer (backend %s)", cookie, first.backend)
		return
	}
	for range 3 {
		a, n, err := c.fetch(c.oneShot, path, map[string]string{cookie: value})
		o.bytes += n
		if err != nil {
			o.err = err
			return
		}
		if a.backend != first.backend {
			o.err = fmt.Errorf("%s=%s went to backend %s, its cookie was set by %s", cookie, value, a.backend, first.backend)
			return
		}
	}
}

// echoSize is mostly small, sometimes large: 1 B to 4 MiB.
func (c *client) echoSize() int {
	switch r := c.rng.IntN(100); {
	case r < 70:
		return 1 + c.rng.IntN(4<<10)
	case r < 95:
		return 1 + c.rng.IntN(256<<10)
	default:
		return 1 + c.rng.IntN(4<<20)
	}
}

// echo sends size random bytes through the echo lb, half-closes, and checks that exactly
// those bytes come back, in order, before the backend's FIN. slow writes and reads in pieces
// of 1 to 512 bytes with pauses, at most 1,000 of them (a few seconds): size is chosen then.
func (c *client) echo(kind string, size int, slow bool) {
	o := op{start: time.Now()}
	defer func() { o.end = time.Now(); c.record(kind, "echo", o) }()
	pause := func() {}
	chunk := size
	if slow {
		chunk = 1 + c.rng.IntN(512)
		size = 1 + c.rng.IntN(min(32<<10, 1000*chunk))
		pause = func() { time.Sleep(time.Duration(1+c.rng.IntN(5)) * time.Millisecond) } // a slow peer, on purpose
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(c.rng.Uint32())
	}
	conn, err := net.DialTimeout("tcp", c.echoLB, 5*time.Second)
	if err != nil {
		o.err = err
		return
	}
	tc := conn.(*net.TCPConn)
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		for off := 0; off < len(data); off += chunk {
			if _, err := tc.Write(data[off:min(off+chunk, len(data))]); err != nil {
				werr <- err
				return
			}
			if slow {
				time.Sleep(2 * time.Millisecond) // the writer's own pace
			}
		}
		werr <- tc.CloseWrite()
	}()
	got := make([]byte, 0, size)
	buf := make([]byte, chunk)
	for {
		n, err := tc.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			o.err = err
			break
		}
		pause()
	}
	o.bytes = int64(len(got))
	if e := <-werr; e != nil && o.err == nil {
		o.err = fmt.Errorf("write: %w", e)
	}
	if o.err == nil && !bytes.Equal(got, data) {
		o.err = fmt.Errorf("echo of %d bytes came back as %d bytes, first difference at %d", len(data), len(got), firstDiff(got, data))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// badFirstPackets are first packets lb must route or refuse without harm.
var badFirstPackets = [][]byte{
	[]byte("GET / HTTP/1.1\r\nHost: \x00\x01\r\n\r\n"),
	[]byte("GET /" + strings.Repeat("a", 20<<10) + " HTTP/1.1\r\n\r\n"),
	[]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
	[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
	[]byte("GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
	[]byte("\r\n\r\n\r\n"),
	{},
}

// badFirstPacket sends a malformed, binary or oversized first packet, or a slowloris head,
// and reads what comes back: lb must neither crash nor wedge, which the run's end checks.
func (c *client) badFirstPacket() {
	o := op{start: time.Now()}
	defer func() { o.end = time.Now(); c.record("bad-first-packet", "http", o) }()
	conn, err := net.DialTimeout("tcp", c.httpLB, 5*time.Second)
	if err != nil {
		o.err = err
		return
	}
	tc := conn.(*net.TCPConn)
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(15 * time.Second))
	if c.rng.IntN(4) == 0 { // slowloris: a head a byte at a time, never finished
		for _, b := range []byte("GET / HTTP/1.1\r\nX: ") {
			if _, err := tc.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond) // the slowloris's pace
		}
		return
	}
	p := badFirstPackets[c.rng.IntN(len(badFirstPackets))]
	tc.Write(p)
	tc.CloseWrite()
	o.bytes, _ = io.Copy(io.Discard, tc)
}
