package httpsniff

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection: Sniff's deadlines, EOF on
// half-close and partial reads are the kernel's, not a simulation's.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// readSignal tells the writer each time Sniff's Read returned, so that the next piece is
// written only after the previous one was read: every piece arrives in its own Read.
type readSignal struct {
	*net.TCPConn
	reads chan int
}

func (r readSignal) Read(p []byte) (int, error) {
	n, err := r.TCPConn.Read(p)
	r.reads <- n
	return n, err
}

func TestSniffHeadSplitAcrossWrites(t *testing.T) {
	for _, size := range []int{1, 2, 3, 7, 64, 500} {
		client, server := tcpPair(t)
		var pieces []string
		for rest := chromeHead; len(rest) > 0; {
			n := min(size, len(rest))
			pieces, rest = append(pieces, rest[:n]), rest[n:]
		}
		conn := readSignal{server, make(chan int, len(chromeHead))}
		stop, written := make(chan struct{}), make(chan error, 1)
		go func() {
			for _, p := range pieces {
				if _, err := client.Write([]byte(p)); err != nil {
					written <- err
					return
				}
				select {
				case <-conn.reads:
				case <-stop: // Sniff returned early; the check below says why
				}
			}
			written <- nil
		}()

		buf := make([]byte, 16<<10)
		h, n, err := Sniff(conn, buf, time.Now().Add(10*time.Second))
		close(stop)
		if werr := <-written; werr != nil {
			t.Fatal(werr)
		}
		if err != nil || h.Kind != KindHTTP1 || n != len(chromeHead) || h.Len != n {
			t.Fatalf("pieces of %d: Sniff = Kind %v, n %d, Len %d, %v; want http1, %d", size, h.Kind, n, h.Len, err, len(chromeHead))
		}
		if string(buf[:n]) != chromeHead || string(h.Host) != "app.example.com" {
			t.Fatalf("pieces of %d: read %q, Host %q", size, buf[:n], h.Host)
		}
		if v, ok := h.Cookie("lb_srv"); !ok || string(v) != "backend-2" {
			t.Fatalf("pieces of %d: Cookie(lb_srv) = %q, %t", size, v, ok)
		}
	}
}

// neverEnding writes a head that never ends until the connection breaks.
func neverEnding(c *net.TCPConn, done chan<- struct{}) {
	defer close(done)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: foo.com\r\n")); err != nil {
		return
	}
	chunk := bytes.Repeat([]byte{'a'}, 1024)
	for {
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

func TestSniffNeverEndingHead(t *testing.T) {
	client, server := tcpPair(t)
	done := make(chan struct{})
	go neverEnding(client, done)
	defer func() { server.Close(); <-done }()

	buf := make([]byte, 4096)
	h, n, err := Sniff(server, buf, time.Now().Add(10*time.Second))
	if !errors.Is(err, ErrHeadTooLarge) || n != len(buf) || h.Kind != KindUnknown {
		t.Fatalf("Sniff = Kind %v, n %d, %v; want unknown, %d, ErrHeadTooLarge", h.Kind, n, err, len(buf))
	}
	if want := "GET / HTTP/1.1\r\nHost: foo.com\r\naaa"; !bytes.HasPrefix(buf, []byte(want)) {
		t.Fatalf("buf starts %q; want %q", buf[:len(want)], want)
	}
}

func TestSniffSilentClient(t *testing.T) {
	client, server := tcpPair(t)
	buf := make([]byte, 1024)
	h, n, err := Sniff(server, buf, time.Now().Add(50*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 0 || h.Kind != KindEmpty {
		t.Fatalf("Sniff = Kind %v, n %d, %v; want empty, 0, deadline exceeded", h.Kind, n, err)
	}
	// The deadline has passed: had Sniff left it set, this Read would fail at once.
	if _, err := client.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "late" {
		t.Fatalf("Read after Sniff = %q, %v; want the read deadline cleared", got, err)
	}
}

func TestSniffSlowClient(t *testing.T) {
	client, server := tcpPair(t)
	if _, err := client.Write([]byte("GET / HT")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	h, n, err := Sniff(server, buf, time.Now().Add(50*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 8 || h.Kind != KindUnknown || string(buf[:n]) != "GET / HT" {
		t.Fatalf("Sniff = Kind %v, %q, %v; want unknown, \"GET / HT\", deadline exceeded", h.Kind, buf[:n], err)
	}
}

func TestSniffHalfClosedClient(t *testing.T) {
	for _, sent := range []string{"", "G", "GET / HTTP/1.1\r\nHost: a\r\n", "PRI * HTTP/2.0\r\n"} {
		client, server := tcpPair(t)
		if _, err := client.Write([]byte(sent)); err != nil {
			t.Fatal(err)
		}
		if err := client.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1024)
		h, n, err := Sniff(server, buf, time.Now().Add(10*time.Second))
		wantKind := KindUnknown
		if sent == "" {
			wantKind = KindEmpty
		}
		if err != io.EOF || h.Kind != wantKind || string(buf[:n]) != sent {
			t.Fatalf("Sniff after %q = Kind %v, %q, %v; want %v, the bytes, io.EOF", sent, h.Kind, buf[:n], err, wantKind)
		}
	}
}

// TestSniffNoBytesConsumed checks that buf[:n] followed by what is left on the connection
// is exactly what the client sent, whatever Sniff decided.
func TestSniffNoBytesConsumed(t *testing.T) {
	bigCookie := "GET / HTTP/1.1\r\nHost: h\r\nCookie: " + strings.Repeat("k=v; ", 3000) + "lb_srv=1\r\n\r\n"
	tests := []struct {
		name string
		sent string
		kind Kind
		err  error
	}{
		{name: "get", sent: chromeHead, kind: KindHTTP1},
		{name: "post-body", sent: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", kind: KindHTTP1},
		{name: "pipelined", sent: chromeHead + chromeHead + chromeHead, kind: KindHTTP1},
		{name: "big-cookie", sent: bigCookie + "body", kind: KindHTTP1},
		{name: "too-large", sent: strings.Replace(bigCookie, "k=v; ", "k=v; k=v; ", -1), err: ErrHeadTooLarge},
		{name: "tls", sent: tlsHello + strings.Repeat("\x00", 500), kind: KindTLS},
		{name: "h2", sent: h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", kind: KindHTTP2},
		{name: "ssh", sent: "SSH-2.0-OpenSSH_9.6\r\nmore", kind: KindOther},
		{name: "malformed", sent: "GET / HTTP/1.1\r\nHost a\r\n\r\nrest", err: ErrMalformed},
		{name: "partial", sent: "GET / HTTP/1.1\r\nHost: a\r\n", err: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			wrote := make(chan error, 1)
			go func() {
				_, err := client.Write([]byte(tt.sent))
				if err == nil {
					err = client.CloseWrite()
				}
				wrote <- err
			}()
			buf := make([]byte, 16<<10)
			h, n, err := Sniff(server, buf, time.Now().Add(10*time.Second))
			if err != tt.err || h.Kind != tt.kind {
				t.Fatalf("Sniff = Kind %v, %v; want %v, %v", h.Kind, err, tt.kind, tt.err)
			}
			rest, rerr := io.ReadAll(server)
			if werr := <-wrote; werr != nil {
				t.Fatal(werr)
			}
			if rerr != nil {
				t.Fatal(rerr)
			}
			if got := string(buf[:n]) + string(rest); got != tt.sent {
				t.Fatalf("peeked %d + rest %d bytes differ from the %d sent", n, len(rest), len(tt.sent))
			}
		})
	}
}

func TestSniffTLSClientHello(t *testing.T) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(client, &tls.Config{ServerName: "example.com"}).Handshake()
	}()
	defer func() { server.Close(); client.Close(); <-done }()

	buf := make([]byte, 4096)
	h, n, err := Sniff(server, buf, time.Now().Add(10*time.Second))
	if err != nil || h.Kind != KindTLS || n < 3 {
		t.Fatalf("Sniff(ClientHello) = Kind %v, n %d, %v; want tls", h.Kind, n, err)
	}
}

// script is a Conn that plays back reads and records the deadlines it was given.
type script struct {
	reads     []read
	deadlines []time.Time
	failSet   error
	maxP      int // largest buffer Read was given
}

type read struct {
	data string
	err  error
}

func (s *script) Read(p []byte) (int, error) {
	s.maxP = max(s.maxP, len(p))
	if len(s.reads) == 0 {
		return 0, io.EOF
	}
	r := &s.reads[0]
	n := copy(p, r.data)
	r.data = r.data[n:]
	if r.data != "" {
		return n, nil
	}
	s.reads = s.reads[1:]
	return n, r.err
}

func (s *script) SetReadDeadline(t time.Time) error {
	s.deadlines = append(s.deadlines, t)
	return s.failSet
}

func TestSniffScripted(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	errReset := errors.New("connection reset")
	var bytewise []read
	for i := range len(head) {
		bytewise = append(bytewise, read{data: head[i : i+1]})
	}
	empties := make([]read, 200)
	tests := []struct {
		name  string
		reads []read
		buf   int
		kind  Kind
		n     int
		err   error
	}{
		{name: "whole", reads: []read{{data: head}}, buf: 64, kind: KindHTTP1, n: len(head)},
		{name: "bytewise", reads: bytewise, buf: 64, kind: KindHTTP1, n: len(head)},
		{name: "last-bytes-with-eof", reads: []read{{data: head[:5]}, {data: head[5:], err: io.EOF}}, buf: 64, kind: KindHTTP1, n: len(head)},
		{name: "eof-partial", reads: []read{{data: head[:5], err: io.EOF}}, buf: 64, kind: KindUnknown, n: 5, err: io.EOF},
		{name: "reset-empty", reads: []read{{err: errReset}}, buf: 64, kind: KindEmpty, err: errReset},
		{name: "exact-fit", reads: []read{{data: head}}, buf: len(head), kind: KindHTTP1, n: len(head)},
		{name: "one-short", reads: []read{{data: head}}, buf: len(head) - 1, n: len(head) - 1, err: ErrHeadTooLarge},
		{name: "zero-buffer", reads: []read{{data: head}}, buf: 0, err: ErrHeadTooLarge},
		{name: "no-progress", reads: empties, buf: 64, err: io.ErrNoProgress},
		{name: "tls-first-byte-then-more", reads: []read{{data: "\x16"}, {data: "\x03\x01"}}, buf: 64, kind: KindTLS, n: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deadline := time.Now().Add(time.Minute)
			c := &script{reads: tt.reads}
			buf := make([]byte, tt.buf)
			h, n, err := Sniff(c, buf, deadline)
			if err != tt.err || h.Kind != tt.kind || n != tt.n {
				t.Fatalf("Sniff = Kind %v, n %d, %v; want %v, %d, %v", h.Kind, n, err, tt.kind, tt.n, tt.err)
			}
			if len(c.deadlines) != 2 || !c.deadlines[0].Equal(deadline) || !c.deadlines[1].IsZero() {
				t.Fatalf("deadlines set: %v; want the deadline, then zero", c.deadlines)
			}
			if c.maxP > tt.buf {
				t.Fatalf("Read got %d bytes of room from a %d-byte buffer", c.maxP, tt.buf)
			}
		})
	}
}

func TestSniffDeadlineErrors(t *testing.T) {
	errSet := errors.New("use of closed network connection")
	c := &script{reads: []read{{data: "GET / HTTP/1.1\r\n\r\n"}}, failSet: errSet}
	h, n, err := Sniff(c, make([]byte, 64), time.Now().Add(time.Minute))
	if !errors.Is(err, errSet) || n != 0 || h.Kind != KindUnknown || len(c.reads) != 1 {
		t.Fatalf("Sniff with a failing SetReadDeadline = Kind %v, n %d, %v; want no read and the error", h.Kind, n, err)
	}
}
