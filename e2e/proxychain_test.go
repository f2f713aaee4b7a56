package e2e

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// TestProxyChainReachesNginx: the client's address reaches a proxy_protocol nginx through
// lb, for v1 and v2, from IPv4 and IPv6 clients; and through a chain client → lb A (send v2)
// → lb B (accept A, send v1) → nginx, which logs the client, not lb A.
func TestProxyChainReachesNginx(t *testing.T) {
	ngx := startProxyNginx(t)
	servers := writeServersFile(t, ngx.Addr)
	request := func(t *testing.T, from netip.Addr, addr, path string) netip.AddrPort {
		t.Helper()
		c, err := dialFrom(from, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path)
		if b, _ := io.ReadAll(c); !strings.HasPrefix(string(b), "HTTP/1.1 200") {
			t.Fatalf("through lb: %q", b)
		}
		return c.LocalAddr().(*net.TCPAddr).AddrPort()
	}
	v4, v6 := netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("::1")
	for _, v := range []string{"v1", "v2"} {
		lb4 := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--send-proxy", v)
		lb6 := startLB(t, nil, "serve", "-f", servers, "--listen", "[::1]:0", "--send-proxy", v)
		for _, tc := range []struct {
			from netip.Addr
			lb   string
		}{{v4, lb4.Addr}, {v6, lb6.Addr}} {
			path := fmt.Sprintf("/?%s-%s", v, tc.from)
			client := request(t, tc.from, tc.lb, path)
			if got := proxyLog(t, ngx, path); got.Client != client {
				t.Errorf("%s from %v: nginx logged %v, want the client %v", v, tc.from, got.Client, client)
			}
		}
	}

	// lb A dials lb B from 127.0.0.1: B trusts that address, and no other.
	bTrusting := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--send-proxy", "v1", "--accept-proxy", "127.0.0.1/32")
	aChained := startLB(t, nil, "serve", "-f", writeServersFile(t, bTrusting.Addr), "--listen", "127.0.0.1:0", "--send-proxy", "v2")
	client := request(t, netip.MustParseAddr("127.0.0.7"), aChained.Addr, "/?chain")
	if got := proxyLog(t, ngx, "/?chain"); got.Client != client {
		t.Errorf("through lb A and lb B: nginx logged %v, want the client %v, not lb A", got.Client, client)
	}
}
