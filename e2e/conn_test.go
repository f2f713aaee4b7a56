package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lb/internal/freeport"
)

// ioDeadline bounds every client read and write of these tests.
const ioDeadline = 10 * time.Second

// dialLB connects to lb with a deadline on the whole conversation.
func dialLB(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioDeadline)
	if err != nil {
		t.Fatalf("dial lb: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioDeadline))
	return c.(*net.TCPConn)
}

// pattern is a reproducible byte stream both sides of a test can compute.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	mrand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// A client that shuts its write side after the request still gets the whole reply: lb
// passes the half-close on and keeps the other direction open.
func TestHalfClose(t *testing.T) {
	reply := pattern(1<<20, 1)
	// The backend answers only at EOF, as nginx cannot (it aborts on an early FIN).
	backend := startTCPBackend(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(ioDeadline))
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes sha256=%x\n", n, h.Sum(nil))
		c.Write(reply)
	})
	servers := writeServersFile(t, backend.Addr)
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0")

	body := pattern(64<<10, 2)
	request := append([]byte(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: e2e\r\nContent-Length: %d\r\n\r\n", len(body))), body...)
	c := dialLB(t, lb.Addr)
	if _, err := c.Write(request); err != nil {
		t.Fatalf("write request: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := errReadAll("read reply after CloseWrite", c)
	if err != nil {
		t.Fatal(err)
	}
	wantHead := fmt.Sprintf("got %d bytes sha256=%x\n", len(request), sha256.Sum256(request))
	head, rest, _ := bytes.Cut(got, []byte("\n"))
	if string(head)+"\n" != wantHead {
		t.Errorf("backend saw %q, want %q", head, strings.TrimSpace(wantHead))
	}
	if !bytes.Equal(rest, reply) {
		t.Errorf("reply after the head: %d bytes with sha256 %x, want %d bytes with sha256 %x",
			len(rest), sha256.Sum256(rest), len(reply), sha256.Sum256(reply))
	}
	lb.stop(t)
}

// readAnswer sends req and reads one HTTP response that must end the connection; it
// returns the response, its body and the raw bytes of its head.
func readAnswer(t *testing.T, c *net.TCPConn, req string) (*http.Response, []byte, string) {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	raw, err := errReadAll("read the answer", c)
	if err != nil {
		t.Fatalf("answer to %q: %q, %v", req, raw, err)
	}
	br := bufio.NewReader(bytes.NewReader(raw))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("answer to %q: %q: %v", req, raw, err)
	}
	body, err := errReadAll("read body", resp.Body)
	if err != nil {
		t.Fatalf("answer %q: %v", raw, err)
	}
	if extra, _ := io.ReadAll(br); len(extra) > 0 {
		t.Errorf("answer %q: %d bytes after the response", raw, len(extra))
	}
	head, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	return resp, body, head
}

// hasHeader reports whether the raw response head has the header line name: value.
func hasHeader(head, name, value string) bool {
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(k, name) && strings.EqualFold(strings.TrimSpace(v), value) {
			return true
		}
	}
	return false
}

// With every backend down an HTTP client gets a short 503 and Connection: close, and a
// client that does not speak HTTP is closed without an answer.
func TestNoBackendUp(t *testing.T) {
	servers := writeServersFile(t,
		fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)),
		fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)))
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--sniff-timeout", "500ms")

	t.Run("http", func(t *testing.T) {
		c := dialLB(t, lb.Addr)
		resp, body, head := readAnswer(t, c, "GET / HTTP/1.1\r\nHost: e2e\r\n\r\n")
		c.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Proto != "HTTP/1.1" {
			t.Errorf("got %s %s, want HTTP/1.1 503 Service Unavailable", resp.Proto, resp.Status)
		}
		if !hasHeader(head, "Connection", "close") {
			t.Errorf("503 without Connection: close: %q", head)
		}
		if len(body) == 0 || len(body) > 512 {
			t.Errorf("503 body of %d bytes, want a short message: %q", len(body), body)
		}
	})
	t.Run("binary", func(t *testing.T) {
		c := dialLB(t, lb.Addr)
		if _, err := c.Write([]byte{0x00, 0xff, 0x13, 0x37, 0x80, 0x01, 0x02, 0x03}); err != nil {
			t.Fatalf("write: %v", err)
		}
		got, err := io.ReadAll(c)
		if len(got) > 0 {
			t.Errorf("a non-HTTP client got %q, want the connection closed without bytes", got)
		}
		if err != nil && !isReset(err) {
			t.Errorf("a non-HTTP client: %v, want EOF (or a reset)", err)
		}
	})
	lb.stop(t)
}

func isReset(err error) bool { return err != nil && errors.Is(err, syscall.ECONNRESET) }

// When the backends are up in the ring but every dial fails, an HTTP client gets 502.
func TestAllDialsFail(t *testing.T) {
	backend := startTCPBackend(t, echo)
	servers := writeServersFile(t, backend.Addr)
	// Probes are far apart, so the backend is still up in the ring when the dial fails.
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--health-interval", "1m")
	backend.closeListener()

	c := dialLB(t, lb.Addr)
	resp, _, head := readAnswer(t, c, "GET / HTTP/1.1\r\nHost: e2e\r\n\r\n")
	c.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("got %s, want 502 Bad Gateway", resp.Status)
	}
	if !hasHeader(head, "Connection", "close") {
		t.Errorf("502 without Connection: close: %q", head)
	}
	lb.stop(t)
}

// SIGTERM stops new connections at once but lets a request in flight finish, then lb
// exits 0.
func TestDrain(t *testing.T) {
	reply := pattern(256<<10, 3)
	received := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	answer := func() { releaseOnce.Do(func() { close(release) }) }
	backend := startTCPBackend(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(ioDeadline))
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		received <- struct{}{}
		<-release // a slow backend: it answers when the test says so
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(reply))
		c.Write(reply)
	})
	t.Cleanup(answer) // before the backend's cleanup waits for its handler, if the test ends early
	servers := writeServersFile(t, backend.Addr)
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--drain-timeout", "5s")

	c := dialLB(t, lb.Addr)
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: e2e\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-received:
	case <-time.After(ioDeadline):
		t.Fatal("the request did not reach the backend")
	}
	lb.signal(t, syscall.SIGTERM)

	// New connections are refused while the request is still open.
	refused := waitUntil(5*time.Second, func() bool {
		nc, err := net.DialTimeout("tcp", lb.Addr, time.Second)
		if err == nil {
			nc.Close()
		}
		return isRefused(err)
	})
	answer()
	if !refused {
		t.Errorf("lb still accepts connections 5s after SIGTERM")
	}

	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the request in flight at SIGTERM: %v", err)
	}
	body, err := errReadAll("the body of the request in flight at SIGTERM", resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, reply) {
		t.Errorf("the request in flight at SIGTERM: %s with %d bytes (sha256 %x), want 200 with %d bytes (sha256 %x)",
			resp.Status, len(body), sha256.Sum256(body), len(reply), sha256.Sum256(reply))
	}
	// The client is done; with its connection closed lb has nothing left to drain.
	c.Close()
	lb.wait(t, stopDeadline)
	if _, late := lb.log.waitFor(0, 0, func(e logEntry) bool { return strings.HasPrefix(e.Message, "drain timeout") }); late {
		t.Errorf("lb hit its drain timeout; the connection should have finished first")
	}
}

// Bytes that are not HTTP go through untouched, both ways, and a client that says nothing
// still reaches a server that speaks first, once the sniff timeout has passed.
func TestPassthrough(t *testing.T) {
	echoBackend := startTCPBackend(t, echo)
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, echoBackend.Addr), "--listen", "127.0.0.1:0", "--sniff-timeout", "200ms")

	// A TLS record carrying a ClientHello-shaped handshake, then random bulk.
	hello := make([]byte, 517)
	rand.Read(hello)
	copy(hello, []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03})
	for _, tc := range []struct {
		name  string
		first []byte
	}{
		{"tls", hello},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := append(append([]byte{}, tc.first...), pattern(256<<10, 4)...)
			got, err := echoThrough(dialLB(t, lb.Addr), sent)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, sent) {
				t.Errorf("echo of %d bytes (first %q) came back as %d bytes, first difference at %d",
					len(sent), sent[:min(16, len(sent))], len(got), firstDiff(got, sent))
			}
		})
	}
	lb.stop(t)

	t.Run("server-speaks-first", func(t *testing.T) {
		const greeting = "220 e2e.test ESMTP ready\r\n"
		greeter := startTCPBackend(t, func(c *net.TCPConn) {
			if _, err := io.WriteString(c, greeting); err == nil {
				echo(c)
			}
		})
		lb := startLB(t, nil, "serve", "-f", writeServersFile(t, greeter.Addr), "--listen", "127.0.0.1:0", "--sniff-timeout", "200ms")
		c := dialLB(t, lb.Addr)
		start := time.Now()
		got := make([]byte, len(greeting))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("a silent client got %q then %v (after %v), want the greeting", got, err, time.Since(start))
		}
		waited := time.Since(start)
		if string(got) != greeting {
			t.Errorf("greeting %q, want %q", got, greeting)
		}
		if waited > 3*time.Second {
			t.Errorf("the greeting took %v with --sniff-timeout 200ms", waited)
		}
		if _, err := io.WriteString(c, "EHLO client\r\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if line != "EHLO client\r\n" {
			t.Errorf("after the greeting, echo %q, %v; want %q", line, err, "EHLO client\r\n")
		}
		t.Logf("greeting after %v", waited.Round(time.Millisecond))
		c.Close()
		lb.stop(t)
	})
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
