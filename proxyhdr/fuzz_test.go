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

// FuzzParse holds Parse to go-proxyproto's reader on every input Parse decides: the same
// verdict (not PROXY, malformed, or a header), the same addresses and the same length. An
// input Parse calls ErrNeedMore must be a proper prefix of what it could accept: no
// verdict yet, and nothing read past its end.
func FuzzParse(f *testing.F) {
	seeds := [][]byte{
		AppendV1(nil, v4src, v4dst), AppendV1(nil, v6src, v6dst), []byte("PROXY UNKNOWN\r\n"),
		AppendV2(nil, v4src, v4dst), AppendV2(nil, v6src, v6dst), AppendV2Local(nil),
		[]byte("GET / HTTP/1.1\r\n\r\n"), []byte("PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n"),
		v2hdr(v2Proxy, famUnixStr, 216, make([]byte, 216)...),
		v2hdr(v2Local, famTCP6, 4, 1, 2, 3, 4),
	}
	for _, s := range seeds {
		f.Add(append(s, "GET / HTTP/1.1\r\n"...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := Parse(in)
		if errors.Is(err, ErrNeedMore) {
			return // go-proxyproto would block for (or fail on the EOF of) the missing bytes
		}
		r := bytes.NewReader(in)
		br := bufio.NewReaderSize(r, max(16, len(in)))
		ph, perr := proxyproto.Read(br)
		consumed := len(in) - r.Len() - br.Buffered()
		switch {
		case errors.Is(err, ErrNotProxy):
			if !errors.Is(perr, proxyproto.ErrNoProxyProtocol) {
				t.Fatalf("Parse(%q): not PROXY; go-proxyproto: %+v, %v", in, ph, perr)
			}
		case errors.Is(err, ErrMalformed):
			if perr == nil || errors.Is(perr, proxyproto.ErrNoProxyProtocol) {
				t.Fatalf("Parse(%q): malformed; go-proxyproto: %+v, %v", in, ph, perr)
			}
		case err != nil:
			t.Fatalf("Parse(%q): unexpected error %v", in, err)
		default:
			if perr != nil {
				t.Fatalf("Parse(%q) = %+v; go-proxyproto: %v", in, h, perr)
			}
			if h.Len != consumed || int(ph.Version) != h.Version {
				t.Fatalf("Parse(%q) = %+v; go-proxyproto read version %d, %d bytes", in, h, ph.Version, consumed)
			}
			var src, dst netip.AddrPort
			if ph.Command == proxyproto.PROXY {
				src, dst = pires(ph.SourceAddr), pires(ph.DestinationAddr)
			}
			if h.Src != src || h.Dst != dst {
				t.Fatalf("Parse(%q) = %v -> %v; go-proxyproto: %v -> %v", in, h.Src, h.Dst, ph.SourceAddr, ph.DestinationAddr)
			}
		}
	})
}

// pires converts go-proxyproto's address to an AddrPort; a Unix address has none.
func pires(a net.Addr) netip.AddrPort {
	var ip net.IP
	var port int
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, port = a.IP, a.Port
	case *net.UDPAddr:
		ip, port = a.IP, a.Port
	default:
		return netip.AddrPort{}
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(addr, uint16(port))
}

// FuzzAppend: for any pair of addresses, go-proxyproto reads what AppendV1 and AppendV2
// write as that pair (in one family), and so does Parse, to the last byte.
func FuzzAppend(f *testing.F) {
	f.Add([]byte{192, 0, 2, 10}, uint16(51234), []byte{198, 51, 100, 1}, uint16(443))
	f.Add(v6src.Addr().AsSlice(), uint16(1), v4dst.Addr().AsSlice(), uint16(65535))
	f.Fuzz(func(t *testing.T, s []byte, sport uint16, d []byte, dport uint16) {
		sa, ok1 := netip.AddrFromSlice(s)
		da, ok2 := netip.AddrFromSlice(d)
		if !ok1 || !ok2 {
			return
		}
		src, dst := netip.AddrPortFrom(sa, sport), netip.AddrPortFrom(da, dport)
		s4, d4, _ := family(sa, da)
		want := [2]netip.AddrPort{netip.AddrPortFrom(s4, sport), netip.AddrPortFrom(d4, dport)}
		for _, b := range [][]byte{AppendV1(nil, src, dst), AppendV2(nil, src, dst)} {
			h, err := Parse(b)
			if err != nil || h.Len != len(b) || [2]netip.AddrPort{h.Src, h.Dst} != want {
				t.Fatalf("Parse(%q) = %+v, %v; want %v, %d bytes", b, h, err, want, len(b))
			}
			ph, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
			if err != nil || [2]netip.AddrPort{pires(ph.SourceAddr), pires(ph.DestinationAddr)} != want {
				t.Fatalf("go-proxyproto read %q as %+v, %v; want %v", b, ph, err, want)
			}
		}
	})
}
