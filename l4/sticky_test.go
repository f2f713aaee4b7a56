//go:build linux

package l4

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"lb/sessions"
)

func stickyConfig() Config {
	cfg := testConfig()
	cfg.Sticky = Sticky{Cookie: "lb_srv", CookieAttrs: "Path=/; HttpOnly; SameSite=Lax"}
	return cfg
}

// exchange sends one request head on a new connection and returns the raw response bytes
// up to the backend's close.
func exchange(t *testing.T, addr, req string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	io.WriteString(c, req)
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// closingName answers one request with name and closes, so a test can read to EOF.
func closingName(name string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		http.ReadRequest(bufio.NewReader(c))
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(name), name)
	}
}

func TestStickyCookieInsertedAndFollowed(t *testing.T) {
	a := startBackend(t, closingName("a"))
	b := startBackend(t, closingName("b"))
	s := startServer(t, stickyConfig(), a.addr(), b.addr())

	got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	want := "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\na"
	if got != want {
		t.Fatalf("first response:\n%q\nwant\n%q", got, want)
	}
	// Carrying the cookie (among others, in a second Cookie header): back to b0, no new cookie.
	for range 4 {
		got = exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: x=1\r\nCookie: theme=dark; lb_srv=b0; y=\"2\"\r\n\r\n")
		if !strings.HasSuffix(got, "\r\n\r\na") || strings.Contains(got, "Set-Cookie") {
			t.Fatalf("sticky request: %q, want backend a and no Set-Cookie", got)
		}
	}
	// Without it, the ring goes on: b1, with a cookie naming it.
	if got = exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); !strings.Contains(got, "Set-Cookie: lb_srv=b1;") || !strings.HasSuffix(got, "b") {
		t.Fatalf("new client: %q, want backend b with its cookie", got)
	}
	// A cookie naming a backend that is down, or none at all: re-balanced and re-cookied.
	s.ring.SetUp("b0", false)
	got = exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: lb_srv=b0\r\n\r\n")
	if !strings.Contains(got, "Set-Cookie: lb_srv=b1;") || !strings.HasSuffix(got, "b") {
		t.Fatalf("cookie for a down backend: %q, want b1 and a new cookie", got)
	}
	got = exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: lb_srv=nosuch\r\n\r\n")
	if !strings.Contains(got, "Set-Cookie: lb_srv=b1;") {
		t.Fatalf("cookie for no backend: %q, want a new cookie", got)
	}
}

// offLoopStore is a MemoryStore that lb takes for a store that may wait on the network: it
// calls it off its loops.
type offLoopStore struct{ sessions.Store }

// TestOwnCookieDecidesBeforeALearnedSession: with both sticky modes on, a request whose lb
// cookie names one backend and whose session is recorded on another goes where the cookie
// says, with the store called on the loop or off it.
func TestOwnCookieDecidesBeforeALearnedSession(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store sessions.Store
	}{
		{"memory store, on the loop", sessions.NewMemoryStore(100, time.Minute)},
		{"store off the loop", offLoopStore{sessions.NewMemoryStore(100, time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sessionConfig(tc.store)
			cfg.Sticky.Cookie = "lb_srv"
			cfg.Sticky.CookieAttrs = "Path=/"
			s := startServer(t, cfg, startBackend(t, sessionApp("a")).addr(), startBackend(t, sessionApp("b")).addr())
			if err := tc.store.Set(context.Background(), cfg.Sticky.Keyer.Key([]byte("s1")), "b1"); err != nil {
				t.Fatal(err)
			}
			// The session alone sends the client to b, and lb gives it a cookie naming b.
			got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: sid=s1\r\n\r\n")
			if !strings.HasSuffix(got, "\r\n\r\nb") || !strings.Contains(got, "Set-Cookie: lb_srv=b1; Path=/\r\n") {
				t.Fatalf("the session alone: %q, want backend b and lb's cookie naming it", got)
			}
			// lb's cookie names a: it decides, however the ring turns.
			for i := range 4 {
				got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: sid=s1; lb_srv=b0\r\n\r\n")
				if !strings.HasSuffix(got, "\r\n\r\na") || strings.Contains(got, "Set-Cookie") {
					t.Fatalf("request %d with lb's cookie for a and a session on b: %q, want a, no Set-Cookie", i, got)
				}
			}
		})
	}
}

// TestStickyCookieWhenTheBackendDialFails: the cookie's backend is up in the ring but
// refuses: the client is moved and gets a new cookie, without a failed request.
func TestStickyCookieWhenTheBackendDialFails(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	live := startBackend(t, closingName("live"))
	s := startServer(t, stickyConfig(), deadAddr, live.addr())
	got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\nCookie: lb_srv=b0\r\n\r\n")
	if !strings.Contains(got, "Set-Cookie: lb_srv=b1;") || !strings.HasSuffix(got, "live") {
		t.Fatalf("got %q, want the live backend and its cookie", got)
	}
}

// TestStickyCookieResponseShapes: only the first final head changes, however it arrives;
// bodies, interim heads and what is not HTTP pass untouched.
func TestStickyCookieResponseShapes(t *testing.T) {
	big := randomBytes(t, 4<<20)
	cases := []struct {
		name     string
		response []byte
		want     []byte // nil: the response must pass unchanged
		chunk    int    // write the response in pieces of this size (0: at once)
	}{
		{
			name:     "interim heads first",
			response: []byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
			want:     []byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\n"),
		},
		{
			name:     "101 takes the cookie",
			response: []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
			want:     []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\n\x81\x05hello"),
		},
		{
			name:     "chunked body and a pipelined second response, split byte by byte",
			response: []byte("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
			want:     []byte("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\n\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
			chunk:    1,
		},
		{
			name:     "HEAD: a Content-Length and no body",
			response: []byte("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"),
			want:     []byte("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\n"),
		},
		{name: "malformed head", response: []byte("HTTP/1.1 2xx OK\r\nX: y\r\n\r\nbody")},
		{name: "not HTTP", response: []byte("SSH-2.0-OpenSSH_9.2\r\n")},
		{name: "oversized head", response: []byte("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("y", 20000) + "\r\n\r\n")},
		{
			name:     "bulk body",
			response: append([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(big))), big...),
			want:     append([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\n", len(big))), big...),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := startBackend(t, func(c *net.TCPConn) {
				http.ReadRequest(bufio.NewReader(c))
				for rest := tc.response; len(rest) > 0; {
					n := len(rest)
					if tc.chunk > 0 {
						n = min(n, tc.chunk)
					}
					if _, err := c.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
				}
			})
			s := startServer(t, stickyConfig(), b.addr())
			got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			want := tc.want
			if want == nil {
				want = tc.response
			}
			if sha256.Sum256([]byte(got)) != sha256.Sum256(want) {
				if len(got) > 300 {
					got = got[:300] + "..."
				}
				t.Fatalf("client got %q (%d bytes), want %d bytes", got, len(got), len(want))
			}
			if tc.name == "bulk body" && s.Engine() == EngineEpoll && s.Stats().SplicedBytes < uint64(len(big)*9/10) {
				t.Fatalf("spliced %d bytes of a %d-byte body: the bytes after the head must be spliced", s.Stats().SplicedBytes, len(big))
			}
		})
	}
}

// TestStickyCookieOnlyForHTTP: a TLS client is balanced and its bytes untouched.
func TestStickyCookieOnlyForHTTP(t *testing.T) {
	b := startBackend(t, echo)
	s := startServer(t, stickyConfig(), b.addr())
	c := dial(t, s.addr)
	hello := append([]byte{0x16, 0x03, 0x01, 0x00, 0x20}, bytes.Repeat([]byte{7}, 32)...)
	c.Write(hello)
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, hello) {
		t.Fatalf("echo %q, %v", got, err)
	}
}

// TestStickyInterimHeadsGoAtOnce: a client that sends Expect: 100-continue waits for the 100
// before it sends its body, and the backend waits for the body before its final answer: lb
// must pass the 100 on at once, not hold it until the final head.
func TestStickyInterimHeadsGoAtOnce(t *testing.T) {
	b := startBackend(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		io.ReadAll(io.LimitReader(br, req.ContentLength))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	s := startServer(t, stickyConfig(), b.addr())
	c := dial(t, s.addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q, %v; want the 100 Continue", line, err)
	}
	io.WriteString(c, "hello")
	rest, err := io.ReadAll(br)
	want := "\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\nok"
	if err != nil || string(rest) != want {
		t.Fatalf("after the body: %q, %v; want %q", rest, err, want)
	}
}

// TestStickyHeadLargerThanAPipe: a head with its cookie that the client cannot take at once
// waits for the client, whatever its size against a pipe's, and every byte arrives.
func TestStickyHeadLargerThanAPipe(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("h", 100<<10)
	body := randomBytes(t, 1<<20)
	b := startBackend(t, func(c *net.TCPConn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, head) // the head's end comes once lb has read this: in a read of its own
		waitRead(c)
		fmt.Fprintf(c, "\r\nContent-Length: %d\r\n\r\n", len(body))
		c.Write(body)
		c.CloseWrite()
	})
	cfg := stickyConfig()
	cfg.MaxHeaderBytes = 256 << 10
	s := serveOn(t, cfg, listenSmallSendBuffer(t), b.addr())
	c := dialSmallWindow(t, s.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	// A slow client: it reads once lb's writes to it came up short.
	waitFor(t, "a write to the client cut short", func() bool { return clientWritesShort(s.Server) })
	got, err := io.ReadAll(c)
	want := append([]byte(fmt.Sprintf("%s\r\nContent-Length: %d\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\n", head, len(body))), body...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (%v), want %d, equal", len(got), err, len(want))
	}
}

// earlyHints is a 103 Early Hints head of about n*44 bytes: large enough, with n in the
// thousands, that a client with a small window takes it in several writes.
func earlyHints(n int) string {
	return "HTTP/1.1 103 Early Hints\r\n" + strings.Repeat("Link: </style.css>; rel=preload; as=style\r\n", n) + "\r\n"
}

// sendParts answers one request by writing parts, each once lb has read all the parts before
// it (so that each comes in reads of its own), then FIN.
func sendParts(parts ...string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		http.ReadRequest(bufio.NewReader(c))
		for i, p := range parts {
			if i > 0 {
				waitRead(c)
			}
			io.WriteString(c, p)
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
	}
}

// waitRead waits, for up to 10 s, until the peer of c (lb) has received and read every byte
// written to c. It runs in a backend's handler, which cannot fail the test: on time-out the
// handler goes on, and the test fails on what it reads, if at all.
func waitRead(c *net.TCPConn) {
	pollUntil(10*time.Second, func() bool { return unacked(c) == 0 && peerUnread(c) == 0 })
}

// peerUnread is how many bytes the socket at the other end of c, a loopback IPv4 socket of
// this process (lb's), has received and not read yet: its rx_queue in /proc/net/tcp. -1 if
// it cannot be told.
func peerUnread(c *net.TCPConn) int {
	key := func(a net.Addr) string {
		ta, ok := a.(*net.TCPAddr)
		if !ok || ta.IP.To4() == nil {
			return ""
		}
		return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ta.IP.To4()), ta.Port)
	}
	local, remote := key(c.RemoteAddr()), key(c.LocalAddr()) // as the peer sees them
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil || local == "" || remote == "" {
		return -1
	}
	for _, line := range strings.Split(string(table), "\n") {
		// sl local_address rem_address st tx_queue:rx_queue ...
		if f := strings.Fields(line); len(f) > 4 && f[1] == local && f[2] == remote {
			_, rx, _ := strings.Cut(f[4], ":")
			if n, err := strconv.ParseInt(rx, 16, 64); err == nil {
				return int(n)
			}
		}
	}
	return -1
}

// clientWritesShort reports whether lb's writes to a client of s came up short: a response
// head waits for the client, or a flow holds bytes for it.
func clientWritesShort(s *Server) bool {
	short := false
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil && (c.rh.waitsForClient() || c.ends[backendSide].pending > 0) {
					short = true
				}
			}
		})
	}
	return short
}

// readSlowly sends a request through a server whose sockets have small buffers, on a
// connection with a small window, and reads only once lb's writes to it came up short.
func readSlowly(t *testing.T, cfg Config, backend string) string {
	t.Helper()
	s := serveOn(t, cfg, listenSmallSendBuffer(t), backend)
	c := dialSmallWindow(t, s.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	waitFor(t, "a write to the client cut short", func() bool { return clientWritesShort(s.Server) })
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

// TestStickyInterimHeadsTheClientTakesInParts: interim heads (103 Early Hints) that a slow
// client takes in several writes are followed by the final head with its cookie, whether
// that head was already read, comes later or comes in pieces; with no final head, what came
// goes on as it came.
func TestStickyInterimHeadsTheClientTakesInParts(t *testing.T) {
	h1, h2 := earlyHints(1500), earlyHints(1800)
	final := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
	withCookie := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\nok"
	cases := []struct {
		name  string
		parts []string
		want  string
	}{
		{"final head read with them", []string{h1 + h2 + final}, h1 + h2 + withCookie},
		{"final head later", []string{h1 + h2, final}, h1 + h2 + withCookie},
		{"final head in pieces", []string{h1 + final[:20], final[20:]}, h1 + withCookie},
		{"no final head", []string{h1 + "HTTP/1.1 200 OK\r\nX: y"}, h1 + "HTTP/1.1 200 OK\r\nX: y"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := stickyConfig()
			cfg.MaxHeaderBytes = 256 << 10
			if got := readSlowly(t, cfg, startBackend(t, sendParts(tc.parts...)).addr()); got != tc.want {
				t.Fatalf("read %d bytes, want %d; after the hints: %q", len(got), len(tc.want), got[min(len(got), len(h1)):])
			}
		})
	}
}

// TestStickyHeadBuffersKeepTheirClass: a response whose first read fills --max-header-bytes
// still gets its cookie, in a buffer grown for it, and every buffer given back keeps the
// exact size of its class, so none is taken later for a class it does not fill.
func TestStickyHeadBuffersKeepTheirClass(t *testing.T) {
	body := strings.Repeat("x", 8<<10)
	b := startBackend(t, func(c *net.TCPConn) {
		http.ReadRequest(bufio.NewReader(c))
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	})
	cfg := stickyConfig()
	cfg.MaxHeaderBytes = 1024
	s := startServer(t, cfg, b.addr())
	want := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\nSet-Cookie: lb_srv=b0; Path=/; HttpOnly; SameSite=Lax\r\n\r\n%s", len(body), body)
	for i := range 50 {
		if got := exchange(t, s.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); got != want {
			t.Fatalf("response %d: %d bytes, want %d with the cookie", i, len(got), len(want))
		}
	}
	waitFor(t, "every head buffer given back", func() bool { return s.Stats().HeadBytes == 0 })
	for _, l := range s.loops {
		l.call(func() {
			for i, free := range l.heads.free {
				for _, b := range free {
					if len(b) != minHeadBuf<<i || cap(b) != len(b) {
						t.Errorf("a spare head buffer of class %d is %d bytes long (cap %d), want %d", i, len(b), cap(b), minHeadBuf<<i)
					}
				}
			}
		})
	}
}
