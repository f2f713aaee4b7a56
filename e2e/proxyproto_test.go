package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lb/proxyhdr"
)

// startProxyNginx starts one nginx backend (as startNginx's backend 1) that wants a PROXY
// header, v1 or v2, first on every connection, and logs the client it declares; read the
// lines with proxyLog.
func startProxyNginx(t *testing.T) *nginxBackend {
	t.Helper()
	return startNginxWith(t, 1, nginxOptions{ProxyProtocol: true})[0]
}

// proxyLogLine is one line of a proxy-protocol nginx's access log.
type proxyLogLine struct {
	Client  netip.AddrPort // $proxy_protocol_addr:$proxy_protocol_port: what the header declared
	Remote  string         // $remote_addr, which real_ip sets to the declared address
	Request string         // "GET /path HTTP/1.1"
	Status  int
}

// proxyLog waits until b's access log has a line whose request contains want, and returns
// that line; it fails the test at the deadline. nginx writes the line once the response is
// out, so a client can read the answer before the line is there.
func proxyLog(t *testing.T, b *nginxBackend, want string) proxyLogLine {
	t.Helper()
	path := filepath.Join(b.prefix, "access.log")
	var found proxyLogLine
	var data []byte
	ok := waitUntil(startDeadline, func() bool {
		data, _ = os.ReadFile(path) // not there yet before the first request
		for _, line := range strings.Split(string(data), "\n") {
			if l, ok := parseProxyLogLine(line); ok && strings.Contains(l.Request, want) {
				found = l
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no line with %q in nginx's access log within %v:\n%s", want, startDeadline, data)
	}
	return found
}

// parseProxyLogLine reads `ADDR:PORT REMOTE "REQUEST" STATUS`, the proxied log_format;
// ADDR:PORT is "-:-" for a header without an address (v2 LOCAL, v1 UNKNOWN).
func parseProxyLogLine(line string) (proxyLogLine, bool) {
	head, rest, ok := strings.Cut(line, ` "`)
	req, status, ok2 := strings.Cut(rest, `" `)
	client, remote, ok3 := strings.Cut(head, " ")
	code, err := strconv.Atoi(strings.TrimSpace(status))
	if !ok || !ok2 || !ok3 || err != nil {
		return proxyLogLine{}, false
	}
	if client == "-:-" {
		return proxyLogLine{Remote: remote, Request: req, Status: code}, true
	}
	i := strings.LastIndexByte(client, ':')
	addr, err1 := netip.ParseAddr(client[:max(i, 0)])
	port, err2 := strconv.ParseUint(client[i+1:], 10, 16)
	if i < 0 || err1 != nil || err2 != nil {
		return proxyLogLine{}, false
	}
	return proxyLogLine{netip.AddrPortFrom(addr, uint16(port)), remote, req, code}, true
}

// TestNginxReadsProxyHeaders: what proxyhdr writes, v1 and v2, with IPv4 and IPv6 clients,
// is what a real nginx `listen ... proxy_protocol` logs as the client.
func TestNginxReadsProxyHeaders(t *testing.T) {
	b := startProxyNginx(t)
	cases := []struct {
		name     string
		src, dst netip.AddrPort
		write    func([]byte, netip.AddrPort, netip.AddrPort) []byte
	}{
		{"v1-ipv4", netip.MustParseAddrPort("203.0.113.7:40001"), netip.MustParseAddrPort("198.51.100.1:80"), proxyhdr.AppendV1},
		{"v1-ipv6", netip.MustParseAddrPort("[2001:db8::7]:40002"), netip.MustParseAddrPort("[2001:db8::1]:80"), proxyhdr.AppendV1},
		{"v2-ipv4", netip.MustParseAddrPort("203.0.113.8:40003"), netip.MustParseAddrPort("198.51.100.1:80"), proxyhdr.AppendV2},
		{"v2-ipv6", netip.MustParseAddrPort("[2001:db8::8]:40004"), netip.MustParseAddrPort("[2001:db8::1]:80"), proxyhdr.AppendV2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := fmt.Sprintf("GET /?case=%s HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n", c.name)
			status, body := sendOverProxy(t, b.Addr, c.write(nil, c.src, c.dst), req)
			if status != http.StatusOK || body != "backend-1\n" {
				t.Fatalf("nginx answered %d %q, want 200 backend-1", status, body)
			}
			l := proxyLog(t, b, "case="+c.name)
			if l.Client != c.src || l.Remote != c.src.Addr().String() || l.Status != http.StatusOK {
				t.Errorf("nginx logged client %v, remote %s, status %d; want %v from the header", l.Client, l.Remote, l.Status, c.src)
			}
		})
	}
	t.Run("v2-local", func(t *testing.T) {
		// A probe's LOCAL header: nginx takes the socket's address, lb's own.
		status, _ := sendOverProxy(t, b.Addr, proxyhdr.AppendV2Local(nil), "GET /?case=local HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
		if status != http.StatusOK {
			t.Fatalf("nginx answered %d to a LOCAL header, want 200", status)
		}
		if l := proxyLog(t, b, "case=local"); l.Client.IsValid() || l.Remote != "127.0.0.1" {
			t.Errorf("nginx logged client %v, remote %s for a LOCAL header, want none and the socket's 127.0.0.1", l.Client, l.Remote)
		}
	})
}

// sendOverProxy connects to addr, writes hdr and req in one write (as lb sends a header with
// the replayed bytes), and returns the response's status and body.
func sendOverProxy(t *testing.T, addr string, hdr []byte, req string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, startDeadline)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(startDeadline))
	if _, err := c.Write(append(hdr, req...)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading nginx's answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := errReadAll("nginx's body", resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
