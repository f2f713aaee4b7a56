//go:build linux

package l4

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHeadCap(t *testing.T) {
	for _, tt := range []struct{ n, want int }{{0, 0}, {1, 256}, {256, 256}, {257, 512}, {512, 512}, {513, 1024}, {16 << 10, 16 << 10}, {16<<10 + 1, 32 << 10}} {
		if got := headCap(tt.n); got != tt.want {
			t.Errorf("headCap(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

// TestHeadBufferGrowsWithTheHead: a client that has sent nothing holds no head buffer; one
// that sent 300 bytes of a head holds 512; at 3,000 bytes, 4 KiB; once routed, none.
func TestHeadBufferGrowsWithTheHead(t *testing.T) {
	b := startBackend(t, httpName("ok"))
	cfg := testConfig()
	cfg.SniffTimeout = time.Minute
	s := startServer(t, cfg, b.addr())
	c := dial(t, s.addr)
	waitFor(t, "the connection to be accepted", func() bool { return s.Stats().Active == 1 })
	if held := s.Stats().HeadBytes; held != 0 {
		t.Fatalf("a silent client holds %d bytes of head buffer, want 0", held)
	}
	head := "GET / HTTP/1.1\r\nHost: t\r\nX: " + strings.Repeat("a", 300-29)
	c.Write([]byte(head))
	waitFor(t, "a 512-byte buffer for 300 bytes", func() bool { return s.Stats().HeadBytes == 512 })
	c.Write([]byte(strings.Repeat("b", 2700)))
	waitFor(t, "a 4 KiB buffer for 3,000 bytes", func() bool { return s.Stats().HeadBytes == 4096 })
	c.Write([]byte("\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("answer: %v, %v", resp, err)
	}
	waitFor(t, "the buffer given back", func() bool { return s.Stats().HeadBytes == 0 })
}

// TestHeadMemoryBound: 40 clients that each send 3,000 bytes of a head and wait would need
// 160 KiB of buffers; with MaxHeadMemory 64 KiB, lb holds at most that, and the clients it
// has no room for are routed unparsed. Every byte of every client comes back from the echo
// backend, in order.
func TestHeadMemoryBound(t *testing.T) {
	b := startBackend(t, echo)
	cfg := testConfig()
	cfg.SniffTimeout, cfg.MaxHeadMemory = time.Minute, 64<<10
	s := startServer(t, cfg, b.addr())
	const clients = 40
	heads := make([][]byte, clients)
	conns := make([]interface {
		Write([]byte) (int, error)
		CloseWrite() error
		Read([]byte) (int, error)
	}, clients)
	for i := range clients {
		heads[i] = []byte("GET / HTTP/1.1\r\nHost: t\r\nX: " + strings.Repeat(string(rune('a'+i%26)), 3000-29))
		c := dial(t, s.addr)
		c.Write(heads[i])
		conns[i] = c
	}
	waitFor(t, "every client sniffed or routed", func() bool {
		return phaseCount(s.Server, sniffing)+phaseCount(s.Server, splicing) == clients && s.Stats().Active == clients
	})
	if st := s.Stats(); st.HeadBytes > cfg.MaxHeadMemory || st.HeadsUnparsed == 0 {
		t.Fatalf("head buffers hold %d bytes (bound %d), %d heads unparsed: want the bound held, some unparsed", st.HeadBytes, cfg.MaxHeadMemory, st.HeadsUnparsed)
	}
	for i, c := range conns {
		rest := []byte("\r\n\r\nbody")
		c.Write(rest)
		c.CloseWrite()
		want := append(heads[i], rest...)
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("client %d: %d bytes back of %d (%v), first difference at %d", i, len(got), len(want), err, firstDiff(got, want))
		}
	}
}

// TestSparesFollowTheLoadDown: once the connections are gone, the loops free their spare
// head buffers and the pool its spare pipes within a few seconds.
func TestSparesFollowTheLoadDown(t *testing.T) {
	b := startBackend(t, echo)
	s := startServer(t, testConfig(), b.addr())
	payload := bytes.Repeat([]byte("x"), 1<<20)
	for range 20 {
		c := dial(t, s.addr)
		c.Write([]byte("POST / HTTP/1.1\r\nHost: t\r\n\r\n"))
		go func() { c.Write(payload); c.CloseWrite() }()
		if _, err := io.ReadAll(c); err != nil {
			t.Fatal(err)
		}
	}
	spares := func() (heads, pipes int) {
		for _, l := range s.loops {
			l.call(func() {
				for _, free := range l.heads.free {
					heads += len(free)
				}
			})
		}
		s.pipes.mu.Lock()
		defer s.pipes.mu.Unlock()
		return heads, len(s.pipes.free)
	}
	deadline := time.Now().Add(5 * time.Second) // two trims, a second apart, free them all
	for h, p := spares(); h > 0 || p > 0; h, p = spares() {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the load: %d spare head buffers, %d spare pipes; want none", h, p)
		}
		time.Sleep(50 * time.Millisecond) // polling the trims, which run each second
	}
}

// TestResponseHeadAtTheMemoryBound: when the first response head cannot be read, or its
// cookie not inserted, under MaxHeadMemory, it goes to the client as it came, whole and
// without the cookie. Here another client's 1,000-byte partial head takes the memory the
// response would need.
func TestResponseHeadAtTheMemoryBound(t *testing.T) {
	response := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
	answer := make(chan struct{})
	b := startBackend(t, func(c *net.TCPConn) {
		http.ReadRequest(bufio.NewReader(c))
		<-answer
		io.WriteString(c, response)
	})
	cfg := stickyConfig()
	cfg.SniffTimeout = time.Minute
	cfg.MaxHeaderBytes, cfg.MaxHeadMemory = 1024, 1024+256 // one request's 256 B and one full read
	s := startServer(t, cfg, b.addr())
	c := dial(t, s.addr)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
	waitFor(t, "the request routed", func() bool { return phaseCount(s.Server, splicing) == 1 })
	other := dial(t, s.addr)
	other.Write([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("x", 1000-19)))
	waitFor(t, "the partial head held", func() bool { return s.Stats().HeadBytes == 256+1024 })
	close(answer)
	got, err := io.ReadAll(c)
	if err != nil || string(got) != response {
		t.Fatalf("client got %q, %v; want the response unchanged", got, err)
	}
	if st := s.Stats(); st.HeadsUnparsed == 0 {
		t.Fatalf("HeadsUnparsed = 0: the response head was read after all")
	}
}
