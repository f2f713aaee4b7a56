//go:build linux

package l4

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lb/admit"
	"lb/metrics"
	"lb/proxyhdr"
	"lb/ring"
	"lb/sessions"
)

// recordingBackend keeps the first bytes of each connection it gets, up to the client's FIN.
func recordingBackend(t *testing.T) (*testBackend, chan []byte) {
	got := make(chan []byte, 16)
	b := startBackend(t, func(c *net.TCPConn) {
		all, _ := io.ReadAll(c)
		got <- all
		io.WriteString(c, "ok")
		c.CloseWrite()
	})
	return b, got
}

// TestSendProxyGoesBeforeTheFirstBytes: with SendProxy, the backend reads the header, with
// the client's address and the one it connected to, then the client's bytes untouched.
func TestSendProxyGoesBeforeTheFirstBytes(t *testing.T) {
	for _, v := range []proxyhdr.Version{proxyhdr.V1, proxyhdr.V2} {
		t.Run(v.String(), func(t *testing.T) {
			b, got := recordingBackend(t)
			cfg := testConfig()
			cfg.SendProxy = v
			s := startServer(t, cfg, b.addr())
			c := dial(t, s.addr)
			const sent = "GET / HTTP/1.1\r\nHost: t\r\n\r\nand a body"
			io.WriteString(c, sent)
			c.CloseWrite()
			if reply, _ := io.ReadAll(c); string(reply) != "ok" {
				t.Fatalf("reply %q", reply)
			}
			all := <-got
			h, err := proxyhdr.Parse(all)
			if err != nil || h.Version != int(v) {
				t.Fatalf("backend read %q: %v, version %d", all, err, h.Version)
			}
			if h.Src.String() != c.LocalAddr().String() || h.Dst.String() != s.addr {
				t.Errorf("header says %v → %v, want %v → %v", h.Src, h.Dst, c.LocalAddr(), s.addr)
			}
			if rest := string(all[h.Len:]); rest != sent {
				t.Errorf("after the header: %q, want %q", rest, sent)
			}
			waitFor(t, "closed", func() bool { return s.Stats().Active == 0 })
			if b := backendRow(collect(s.Server), "b0"); b.BytesSent != uint64(len(sent)) {
				t.Errorf("bytes sent %d, want %d: the header is lb's, not the client's", b.BytesSent, len(sent))
			}
		})
	}
}

// TestSendProxyPerBackend: a backend's own proxy= wins over the default (none here).
func TestSendProxyPerBackend(t *testing.T) {
	b, got := recordingBackend(t)
	addr := balancedServer(t, ring.Config{}, ring.Backend{ID: "p", Addr: b.addr(), Weight: 1, Proxy: "v2"})
	c := dial(t, addr)
	io.WriteString(c, "hello")
	c.CloseWrite()
	io.ReadAll(c)
	if h, err := proxyhdr.Parse(<-got); err != nil || h.Version != 2 {
		t.Fatalf("backend with proxy=v2 read a header %+v, %v; want v2", h, err)
	}
}

// TestAcceptProxyFromATrustedPeer: a trusted peer's header is taken off, its source is the
// client for the header lb sends on; the same bytes from an untrusted peer pass untouched;
// a trusted peer's malformed header closes the connection and is counted.
func TestAcceptProxyFromATrustedPeer(t *testing.T) {
	b, got := recordingBackend(t)
	client := netip.MustParseAddrPort("203.0.113.7:4711")
	upstream := proxyhdr.AppendV2(nil, client, netip.MustParseAddrPort("198.51.100.1:443"))
	const sent = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
	send := func(addr string, b []byte) string {
		c := dial(t, addr)
		c.Write(b)
		c.CloseWrite()
		reply, _ := io.ReadAll(c)
		return string(reply)
	}

	trusting := testConfig()
	trusting.AcceptProxy = proxyhdr.Trusted{netip.MustParsePrefix("127.0.0.0/8")}
	trusting.SendProxy = proxyhdr.V1
	s := startServer(t, trusting, b.addr())
	if reply := send(s.addr, append(append([]byte{}, upstream...), sent...)); reply != "ok" {
		t.Fatalf("reply %q", reply)
	}
	all := <-got
	h, err := proxyhdr.Parse(all)
	if err != nil || h.Src != client || string(all[h.Len:]) != sent {
		t.Fatalf("backend read %q (%v): want a v1 header from %v, then the request alone", all, err, client)
	}
	if reply := send(s.addr, []byte("PROXY TCP4 1.2.3.4\r\n"+sent)); reply != "" {
		t.Fatalf("a malformed header got %q, want a close", reply)
	}
	waitFor(t, "closed", func() bool { return s.Stats().Active == 0 })
	if n := collect(s.Server).Refused[metrics.RefuseBadProxy]; n != 1 {
		t.Errorf("bad headers counted %d, want 1", n)
	}

	untrusting := startServer(t, testConfig(), b.addr())
	in := append(append([]byte{}, upstream...), sent...)
	if reply := send(untrusting.addr, in); reply != "ok" {
		t.Fatalf("reply %q", reply)
	}
	if all := <-got; string(all) != string(in) {
		t.Errorf("from an untrusted peer the backend read %q, want the bytes as sent", all)
	}
}

// TestPerIPLimitAnswers429: over --per-ip-max-conns an HTTP client gets 429 with Retry-After
// and another client is closed; the connection that holds the slot goes on.
func TestPerIPLimitAnswers429(t *testing.T) {
	cfg := testConfig()
	cfg.PerIP = admit.Config{MaxConns: 1}
	s := startServer(t, cfg, startBackend(t, echo).addr())
	holder := dial(t, s.addr)
	io.WriteString(holder, "hold")
	if _, err := io.ReadFull(holder, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %v, %v; want 429 with Retry-After", resp, err)
	}
	other := dial(t, s.addr)
	io.WriteString(other, "\x00binary")
	if reply, _ := io.ReadAll(other); len(reply) != 0 {
		t.Fatalf("a non-HTTP client over the limit got %q, want a close", reply)
	}
	io.WriteString(holder, "more")
	if _, err := io.ReadFull(holder, make([]byte, 4)); err != nil {
		t.Fatalf("the connection within the limit: %v", err)
	}
	holder.Close()
	waitFor(t, "closed", func() bool { return s.Stats().Active == 0 })
	snap := collect(s.Server)
	if snap.Refused[metrics.RefuseIPConns] != 2 || snap.Answers[metrics.Answer429] != 1 {
		t.Errorf("refused %v, answers %v: want 2 per_ip_conns, one 429", snap.Refused, snap.Answers)
	}
	again := dial(t, s.addr)
	io.WriteString(again, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if line, _ := bufio.NewReader(again).ReadString('\n'); strings.Contains(line, "429") {
		t.Errorf("after the holder closed: %q, want the limit free again", line)
	}
}

// TestStickyWithProxyHeaders: lb's sticky cookie and learned sessions work with PROXY on
// both sides: the response head is rewritten, the cookie is honored, and the backend reads
// the header first.
func TestStickyWithProxyHeaders(t *testing.T) {
	var seen [2]atomic.Int64
	var backends []string
	for i := range seen {
		backends = append(backends, startBackend(t, func(c *net.TCPConn) {
			br := bufio.NewReader(c)
			if h, err := readProxy(br); err != nil || !h.HasAddr() {
				return
			}
			seen[i].Add(1)
			http.ReadRequest(br)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nSet-Cookie: SID=s%d\r\nContent-Length: 1\r\nConnection: close\r\n\r\n%d", i, i)
		}).addr())
	}
	cfg := stickyConfig()
	cfg.SendProxy = proxyhdr.V2
	cfg.AcceptProxy = proxyhdr.Trusted{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Sticky.SessionCookie, cfg.Sticky.Sessions, cfg.Sticky.Keyer = "SID", sessions.NewMemoryStore(100, time.Minute), sessions.NewKeyer([]byte("k"))
	s := startServer(t, cfg, backends...)
	upstream := proxyhdr.AppendV1(nil, netip.MustParseAddrPort("198.51.100.9:1234"), netip.MustParseAddrPort("198.51.100.1:80"))
	ask := func(cookie string) string {
		c := dial(t, s.addr)
		c.Write(upstream)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n%s\r\n", cookie)
		b, _ := io.ReadAll(c)
		return string(b)
	}
	first := ask("")
	if !strings.Contains(first, "Set-Cookie: lb_srv=b") {
		t.Fatalf("no sticky cookie with PROXY on: %q", first)
	}
	id := first[strings.Index(first, "lb_srv=")+7:][:2]
	for range 4 {
		if got := ask("Cookie: lb_srv=" + id + "\r\n"); !strings.HasSuffix(got, id[1:]) {
			t.Fatalf("cookie for %s: %q, want that backend", id, got)
		}
	}
	sid := "s" + id[1:]
	for range 4 { // the session the backend set, learned: the same backend without lb's cookie
		if got := ask("Cookie: SID=" + sid + "\r\n"); !strings.HasSuffix(got, id[1:]) {
			t.Fatalf("learned session %s: %q, want backend %s", sid, got, id)
		}
	}
}

// readProxy reads a PROXY header off br.
func readProxy(br *bufio.Reader) (proxyhdr.Header, error) {
	for n := 16; ; n++ {
		b, err := br.Peek(n)
		if err != nil {
			return proxyhdr.Header{}, err
		}
		if h, err := proxyhdr.Parse(b); !errors.Is(err, proxyhdr.ErrNeedMore) {
			br.Discard(h.Len)
			return h, err
		}
	}
}

// TestPerIPLimitKeysIPv6OnItsPrefix: IPv6 clients declared by a trusted PROXY header are
// limited per /64: a second address of the holder's /64 gets 429, one of another /64 goes
// through.
func TestPerIPLimitKeysIPv6OnItsPrefix(t *testing.T) {
	cfg := testConfig()
	cfg.PerIP = admit.Config{MaxConns: 1}
	cfg.AcceptProxy = proxyhdr.Trusted{netip.MustParsePrefix("127.0.0.0/8")}
	s := startServer(t, cfg, startBackend(t, echo).addr())
	lbAddr := netip.MustParseAddrPort("[2001:db8:ffff::1]:80")
	as := func(client string) net.Conn {
		c := dial(t, s.addr)
		c.Write(proxyhdr.AppendV1(nil, netip.MustParseAddrPort(client), lbAddr))
		return c
	}
	holder := as("[2001:db8:1:2::1]:40000")
	io.WriteString(holder, "hold")
	if _, err := io.ReadFull(holder, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		client string
		status int
	}{
		{"[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:40001", 429}, // the holder's /64
		{"[2001:db8:1:3::1]:40002", 0},                    // another /64: echoed
	} {
		c := as(tc.client)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if got := strings.Contains(line, "429"); got != (tc.status == 429) {
			t.Errorf("client %s: %q; want 429 %v", tc.client, line, tc.status == 429)
		}
	}
	holder.Close()
}
