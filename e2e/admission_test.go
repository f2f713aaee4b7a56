package e2e

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"lb/admit"
)

// dialFrom connects to addr from the local address src (port chosen by the kernel). On
// Linux all of 127.0.0.0/8 is loopback, so 127.x.y.z gives a test as many distinct clients
// as it wants: what a per-address limit or a flood of addresses needs.
func dialFrom(src netip.Addr, addr string) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: startDeadline, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// floodAddr is the i-th of 2^16 distinct loopback client addresses, 127.1.x.y.
func floodAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)})
}

// readHead reads a request head up to its blank line.
func readHead(r *bufio.Reader) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "\r\n" {
			return nil
		}
	}
}

// TestTooManyAnswerReadByCurl: curl reads admit's 429 answer as lb sends it (after the
// request head, then a close) as a 429 with its Retry-After, and no transfer error.
func TestTooManyAnswerReadByCurl(t *testing.T) {
	curl := requireTool(t, "curl")
	b := startTCPBackend(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(startDeadline))
		if readHead(bufio.NewReader(c)) != nil {
			return
		}
		c.Write(admit.AppendTooMany(nil, 7))
		c.CloseWrite()
	})
	ctx, cancel := context.WithTimeout(context.Background(), startDeadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "-si", "--max-time", "10", "http://"+b.Addr+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	got := string(out)
	if !strings.HasPrefix(got, "HTTP/1.1 429 Too Many Requests\r\n") || !strings.Contains(got, "\r\nRetry-After: 7\r\n") ||
		!strings.HasSuffix(got, "retry later\n") {
		t.Errorf("curl read:\n%s\nwant a 429 with Retry-After: 7 and the whole body", got)
	}
}

// TestDialFromDistinctAddresses: what a backend sees of dialFrom's clients is their own
// addresses, 300 of them, so a flood test through lb can count on them.
func TestDialFromDistinctAddresses(t *testing.T) {
	const n = 300
	var mu sync.Mutex
	seen := map[netip.Addr]bool{}
	b := startTCPBackend(t, func(c *net.TCPConn) {
		mu.Lock()
		seen[c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()] = true
		mu.Unlock()
		c.Write([]byte{1})
	})
	for i := range n {
		c, err := dialFrom(floodAddr(i), b.Addr)
		if err != nil {
			t.Fatalf("dial from %v: %v", floodAddr(i), err)
		}
		c.SetDeadline(time.Now().Add(startDeadline))
		_, err = c.Read(make([]byte, 1)) // the backend has recorded this client
		c.Close()
		if err != nil {
			t.Fatalf("client %v: %v", floodAddr(i), err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if !seen[floodAddr(i)] {
			t.Fatalf("the backend never saw %v (it saw %d addresses)", floodAddr(i), len(seen))
		}
	}
}
