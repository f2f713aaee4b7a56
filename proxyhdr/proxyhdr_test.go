package proxyhdr

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

var (
	v4src = netip.MustParseAddrPort("192.0.2.10:51234")
	v4dst = netip.MustParseAddrPort("198.51.100.1:443")
	v6src = netip.MustParseAddrPort("[2001:db8::10]:51234")
	v6dst = netip.MustParseAddrPort("[2001:db8::1]:8443")
)

func v2hdr(cmd, fam byte, length int, rest ...byte) []byte {
	b := append([]byte(nil), sigV2...)
	b = append(b, cmd, fam, byte(length>>8), byte(length))
	return append(b, rest...)
}

func TestParse(t *testing.T) {
	v2ipv4 := AppendV2(nil, v4src, v4dst)
	v2ipv6 := AppendV2(nil, v6src, v6dst)
	withTLV := v2hdr(v2Proxy, famTCP4, 12+7, append(v2ipv4[16:], 0x02, 0, 4, 'a', '.', 'i', 'o')...)
	tests := []struct {
		name     string
		in       string
		err      error
		src, dst netip.AddrPort
		n        int
	}{
		{"v1 tcp4", "PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\nGET / HTTP/1.1\r\n", nil, v4src, v4dst, 46},
		{"v1 tcp6", "PROXY TCP6 2001:db8::10 2001:db8::1 51234 8443\r\n", nil, v6src, v6dst, 48},
		{"v1 unknown", "PROXY UNKNOWN\r\nGET", nil, netip.AddrPort{}, netip.AddrPort{}, 15},
		{"v1 unknown with addresses", "PROXY UNKNOWN ::1 ::2 1 2\r\n", nil, netip.AddrPort{}, netip.AddrPort{}, 27},
		{"v2 ipv4", string(v2ipv4) + "GET", nil, v4src, v4dst, 28},
		{"v2 ipv6", string(v2ipv6), nil, v6src, v6dst, 52},
		{"v2 ipv4 with a TLV", string(withTLV), nil, v4src, v4dst, 35},
		{"v2 local", string(AppendV2Local(nil)) + "x", nil, netip.AddrPort{}, netip.AddrPort{}, 16},
		{"v2 local, ipv4 block", string(v2hdr(v2Local, famTCP4, 12, v2ipv4[16:]...)), nil, netip.AddrPort{}, netip.AddrPort{}, 28},

		{"empty", "", ErrNeedMore, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 signature prefix", "PRO", ErrNeedMore, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 no CRLF yet", "PROXY TCP4 192.0.2.10 198.51.100.1 51234 44", ErrNeedMore, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 signature prefix", "\r\n\r\n\x00\r\nQU", ErrNeedMore, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 truncated block", string(v2ipv6[:40]), ErrNeedMore, netip.AddrPort{}, netip.AddrPort{}, 0},

		{"http", "GET / HTTP/1.1\r\n", ErrNotProxy, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"P but not PROXY", "POST / HTTP/1.1\r\n", ErrNotProxy, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"CRLF but not v2", "\r\n\r\nGET", ErrNotProxy, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"tls", "\x16\x03\x01\x02\x00", ErrNotProxy, netip.AddrPort{}, netip.AddrPort{}, 0},

		{"v1 LF only", "PROXY UNKNOWN\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 too long", "PROXY UNKNOWN " + string(bytes.Repeat([]byte("a"), 100)), ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 PROXYjunk", "PROXYjunk TCP4\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 tcp5", "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 ipv6 in tcp4", "PROXY TCP4 ::1 ::1 1 2\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 ipv4 in tcp6", "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 port too big", "PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 port leading zero", "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 two spaces", "PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v1 extra field", "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 version 1", string(v2hdr(0x11, famTCP4, 12)), ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 bad command, early", string(sigV2) + "\x22", ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 bad family", string(v2hdr(v2Proxy, 0x13, 12)), ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 proxy unspec", string(v2hdr(v2Proxy, famUnspec, 0)), ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 short block", string(v2hdr(v2Proxy, famTCP4, 8, make([]byte, 8)...)), ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"v2 too long", string(v2hdr(v2Proxy, famTCP4, MaxV2Payload+1)), ErrMalformed, netip.AddrPort{}, netip.AddrPort{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse([]byte(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) error %v, want %v", tt.in, err, tt.err)
			}
			if err != nil {
				if h != (Header{}) {
					t.Errorf("Parse(%q) = %+v with error %v, want the zero Header", tt.in, h, err)
				}
				return
			}
			if h.Src != tt.src || h.Dst != tt.dst || h.Len != tt.n || h.HasAddr() != tt.src.IsValid() {
				t.Errorf("Parse(%q) = %+v, want src %v dst %v len %d", tt.in, h, tt.src, tt.dst, tt.n)
			}
		})
	}
}

// TestParseEveryPrefix: every proper prefix of a valid header needs more bytes, never a
// verdict, so a header split across reads is never refused.
func TestParseEveryPrefix(t *testing.T) {
	for _, full := range [][]byte{
		AppendV1(nil, v4src, v4dst), AppendV1(nil, v6src, v6dst), AppendV1(nil, netip.AddrPort{}, v4dst),
		AppendV2(nil, v4src, v4dst), AppendV2(nil, v6src, v6dst), AppendV2Local(nil),
	} {
		for i := range len(full) {
			if _, err := Parse(full[:i]); !errors.Is(err, ErrNeedMore) {
				t.Errorf("Parse(%q) = %v, want ErrNeedMore", full[:i], err)
			}
		}
		if h, err := Parse(full); err != nil || h.Len != len(full) {
			t.Errorf("Parse(%q) = %+v, %v; want Len %d", full, h, err, len(full))
		}
	}
}

func TestAppend(t *testing.T) {
	mapped := netip.AddrPortFrom(netip.AddrFrom16(v4src.Addr().As16()), 7)
	zoned := netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 9)
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		v1       string
		v2len    int
	}{
		{"ipv4", v4src, v4dst, "PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n", 28},
		{"ipv6", v6src, v6dst, "PROXY TCP6 2001:db8::10 2001:db8::1 51234 8443\r\n", 52},
		{"v4-mapped source, ipv4 destination", mapped, v4dst, "PROXY TCP4 192.0.2.10 198.51.100.1 7 443\r\n", 28},
		{"ipv4 beside ipv6", v4src, v6dst, "PROXY TCP6 ::ffff:192.0.2.10 2001:db8::1 51234 8443\r\n", 52},
		{"zone dropped", zoned, v6dst, "PROXY TCP6 fe80::1 2001:db8::1 9 8443\r\n", 52},
		{"port 0", netip.AddrPortFrom(v4src.Addr(), 0), v4dst, "PROXY TCP4 192.0.2.10 198.51.100.1 0 443\r\n", 28},
		{"no source", netip.AddrPort{}, v4dst, "PROXY UNKNOWN\r\n", 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendV1([]byte("x"), tt.src, tt.dst)); got != "x"+tt.v1 {
				t.Errorf("AppendV1 = %q, want %q", got, "x"+tt.v1)
			}
			if got := AppendV2(nil, tt.src, tt.dst); len(got) != tt.v2len {
				t.Errorf("AppendV2 = %d bytes, want %d", len(got), tt.v2len)
			}
		})
	}
}

// TestAppendRoundTrip reads what the writers write back with go-proxyproto's reader.
func TestAppendRoundTrip(t *testing.T) {
	pairs := [][2]netip.AddrPort{
		{v4src, v4dst}, {v6src, v6dst}, {v4src, v6dst},
		{netip.MustParseAddrPort("0.0.0.0:0"), netip.MustParseAddrPort("255.255.255.255:65535")},
		{netip.MustParseAddrPort("[::]:1"), netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")},
	}
	for _, p := range pairs {
		s, d, four := family(p[0].Addr(), p[1].Addr())
		for _, b := range [][]byte{AppendV1(nil, p[0], p[1]), AppendV2(nil, p[0], p[1])} {
			hdr, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(append(b, "GET"...))))
			if err != nil {
				t.Fatalf("go-proxyproto cannot read %q: %v", b, err)
			}
			src, dst, ok := hdr.TCPAddrs()
			if !ok || hdr.Command != proxyproto.PROXY || hdr.TransportProtocol.IsIPv4() != four {
				t.Fatalf("go-proxyproto read %q as %+v", b, hdr)
			}
			if !addrEqual(src, netip.AddrPortFrom(s, p[0].Port())) || !addrEqual(dst, netip.AddrPortFrom(d, p[1].Port())) {
				t.Errorf("go-proxyproto read %q as %v -> %v, want %v -> %v", b, src, dst, p[0], p[1])
			}
		}
	}
	for _, b := range [][]byte{AppendV2Local(nil), AppendV1(nil, netip.AddrPort{}, v4dst)} {
		hdr, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || hdr.Command != proxyproto.LOCAL {
			t.Errorf("go-proxyproto read %q as %+v, %v; want a LOCAL header", b, hdr, err)
		}
	}
}

func addrEqual(a *net.TCPAddr, want netip.AddrPort) bool {
	got, ok := netip.AddrFromSlice(a.IP)
	return ok && netip.AddrPortFrom(got, uint16(a.Port)) == want
}

func TestZeroAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxV1Len)
	inputs := [][]byte{AppendV1(nil, v6src, v6dst), AppendV2(nil, v6src, v6dst), []byte("GET / HTTP/1.1\r\n")}
	allocs := testing.AllocsPerRun(100, func() {
		for _, in := range inputs {
			Parse(in)
		}
		AppendV1(buf[:0], v6src, v6dst)
		AppendV2(buf[:0], v6src, v6dst)
		AppendV2Local(buf[:0])
	})
	if allocs != 0 {
		t.Errorf("Parse and Append: %v allocs, want 0", allocs)
	}
}

var sink Header

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"v1-ipv4", AppendV1(nil, v4src, v4dst)},
		{"v1-ipv6", AppendV1(nil, v6src, v6dst)},
		{"v2-ipv4", AppendV2(nil, v4src, v4dst)},
		{"v2-ipv6", AppendV2(nil, v6src, v6dst)},
	} {
		in := append(bc.in, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"...)
		b.Run(bc.name+"/lb", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h, err := Parse(in)
				if err != nil {
					b.Fatal(err)
				}
				sink = h
			}
		})
		b.Run(bc.name+"/pires", func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(in)
			br := bufio.NewReaderSize(r, 4096)
			for b.Loop() {
				r.Reset(in)
				br.Reset(r)
				if _, err := proxyproto.Read(br); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppend(b *testing.B) {
	buf := make([]byte, 0, MaxV1Len)
	b.Run("v1/lb", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendV1(buf[:0], v6src, v6dst)
		}
	})
	b.Run("v2/lb", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendV2(buf[:0], v6src, v6dst)
		}
	})
	src, dst := net.TCPAddrFromAddrPort(v6src), net.TCPAddrFromAddrPort(v6dst)
	for _, v := range []byte{1, 2} {
		b.Run("v"+string('0'+v)+"/pires", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proxyproto.HeaderProxyFromAddrs(v, src, dst).Format(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
