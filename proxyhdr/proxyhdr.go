// Package proxyhdr reads and writes the PROXY protocol header (versions 1 and 2) that
// carries a client's address from one proxy to the next, as HAProxy specifies it.
//
// Parse works on bytes lb has already peeked into its own buffer: it never reads, never
// blocks and allocates nothing for a well-formed header. It tells apart a header that needs
// more bytes (ErrNeedMore), bytes that are not a PROXY header (ErrNotProxy) and a header
// that is broken (ErrMalformed), and returns the header's exact length so the caller strips
// exactly it. The Append functions write a header for a pair of addresses into a caller's
// buffer, without allocating when it has the capacity (MaxV1Len or V2Len).
//
// github.com/pires/go-proxyproto is the test oracle: the fuzz target holds Parse to its
// verdicts and addresses, and its reader reads back everything the Append functions write.
package proxyhdr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"unsafe"
)

// Sentinel errors of Parse; test them with errors.Is.
var (
	// ErrNeedMore: the bytes so far are a prefix of a header (or of a signature): read more
	// and call Parse again with all of them.
	ErrNeedMore = errors.New("proxyhdr: need more bytes")
	// ErrNotProxy: the bytes do not start with a PROXY signature; none of them is a header.
	ErrNotProxy = errors.New("proxyhdr: not a PROXY header")
	// ErrMalformed: the bytes start with a PROXY signature, but the header is not valid.
	ErrMalformed = errors.New("proxyhdr: malformed PROXY header")
)

const (
	// MaxV1Len is the longest v1 header, CRLF included (the spec's worst case).
	MaxV1Len = 107
	// V2Len is the length of the v2 headers AppendV2 writes for IPv6 addresses, the longest;
	// IPv4 ones are 28 bytes and AppendV2Local's 16.
	V2Len = 16 + 36
	// MaxV2Payload bounds the v2 length field (address block plus TLVs) Parse accepts; the
	// spec allows 65535, but TLVs beyond a few KiB (a client certificate is 1-2 KiB) only
	// serve to make a balancer buffer them. go-proxyproto's default limit is the same.
	MaxV2Payload = 4096
)

var (
	sigV1 = []byte("PROXY")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// Header is what a PROXY header says.
type Header struct {
	// Version is 1 or 2.
	Version int
	// Src and Dst are the original client's address and the address it connected to. They
	// are both valid, or both the zero AddrPort when the header carries no address (v1
	// UNKNOWN, v2 LOCAL, v2 over AF_UNIX): then the connection's own addresses hold.
	// IPv4 is 4 bytes (Is4); an IPv6 header may carry a v4-mapped address (Is4In6).
	Src, Dst netip.AddrPort
	// Len is the header's length in bytes, TLVs included: the bytes to strip.
	Len int
}

// HasAddr reports whether the header carries the client's address (Src and Dst).
func (h Header) HasAddr() bool { return h.Src.IsValid() }

// Parse reads the PROXY header at the start of b. It returns ErrNeedMore while b is a proper
// prefix of a header, ErrNotProxy when b does not start with a signature, ErrMalformed when
// it does but the header is invalid, and otherwise the header, whose Len bytes the caller
// strips. v2 TLVs are skipped, not checked. Parse does not retain b and allocates only on the
// ErrMalformed path.
func Parse(b []byte) (Header, error) {
	if len(b) == 0 {
		return Header{}, ErrNeedMore
	}
	switch b[0] {
	case sigV1[0]:
		if !hasPrefixOf(b, sigV1) {
			return Header{}, ErrNotProxy
		}
		if len(b) < len(sigV1) {
			return Header{}, ErrNeedMore
		}
		return parseV1(b)
	case sigV2[0]:
		if !hasPrefixOf(b, sigV2) {
			return Header{}, ErrNotProxy
		}
		if len(b) < len(sigV2) {
			return Header{}, ErrNeedMore
		}
		return parseV2(b)
	}
	return Header{}, ErrNotProxy
}

// hasPrefixOf reports whether b and sig agree on their common length.
func hasPrefixOf(b, sig []byte) bool {
	n := min(len(b), len(sig))
	return bytes.Equal(b[:n], sig[:n])
}

// parseV1 reads "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN...\r\n"; b
// starts with "PROXY".
func parseV1(b []byte) (Header, error) {
	end := bytes.IndexByte(b[:min(len(b), MaxV1Len)], '\n')
	if end < 0 {
		if len(b) >= MaxV1Len {
			return Header{}, ErrMalformed
		}
		return Header{}, ErrNeedMore
	}
	h := Header{Version: 1, Len: end + 1}
	if end < 1 || b[end-1] != '\r' {
		return Header{}, ErrMalformed
	}
	line := b[:end-1]
	// The fields are separated by exactly one space; an empty field is malformed.
	var f [6][]byte
	n := 0
	for start := 0; ; {
		sp := bytes.IndexByte(line[start:], ' ')
		if n == len(f) {
			return Header{}, ErrMalformed // a seventh field
		}
		if sp < 0 {
			f[n] = line[start:]
			n++
			break
		}
		f[n] = line[start : start+sp]
		n++
		start += sp + 1
		if n == 2 && string(f[1]) == "UNKNOWN" {
			break // the spec: ignore everything up to the CRLF
		}
	}
	if string(f[0]) != "PROXY" || n < 2 {
		return Header{}, ErrMalformed
	}
	var want4 bool
	switch string(f[1]) {
	case "UNKNOWN":
		return h, nil
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return Header{}, ErrMalformed
	}
	if n != 6 {
		return Header{}, ErrMalformed
	}
	src, ok1 := v1Addr(f[2], want4)
	dst, ok2 := v1Addr(f[3], want4)
	sport, ok3 := v1Port(f[4])
	dport, ok4 := v1Port(f[5])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return Header{}, ErrMalformed
	}
	h.Src, h.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return h, nil
}

// v1Addr parses a TCP4 address (dotted quad) or a TCP6 one (colons; a v4-mapped form too).
func v1Addr(b []byte, want4 bool) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 45 {
		return netip.Addr{}, false
	}
	for _, c := range b {
		// The spec's grammar is hex digits, colons and dots; this also keeps zones out, so
		// the Addr below never refers to b.
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
			return netip.Addr{}, false
		}
	}
	// netip parses without copying b; the string does not outlive this call (no zone).
	a, err := netip.ParseAddr(unsafe.String(&b[0], len(b)))
	if err != nil || a.Is4() != want4 {
		return netip.Addr{}, false
	}
	return a, true
}

// v1Port parses 0 to 65535 in decimal, without a sign or a leading zero.
func v1Port(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	p := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		p = p*10 + int(c-'0')
	}
	return uint16(p), p <= 65535
}

// v2 command (version 2 in the high nibble) and family/transport bytes.
const (
	v2Local = 0x20
	v2Proxy = 0x21

	famUnspec  = 0x00
	famTCP4    = 0x11
	famUDP4    = 0x12
	famTCP6    = 0x21
	famUDP6    = 0x22
	famUnixStr = 0x31
	famUnixDgr = 0x32

	v2AddrLen4    = 12
	v2AddrLen6    = 36
	v2AddrLenUnix = 216
)

// parseV2 reads the binary header; b starts with its 12-byte signature. The fixed fields are
// checked as soon as they arrive, so a broken header is refused before its length is in.
func parseV2(b []byte) (Header, error) {
	if len(b) < 13 {
		return Header{}, ErrNeedMore
	}
	cmd := b[12]
	if cmd != v2Local && cmd != v2Proxy {
		return Header{}, ErrMalformed
	}
	if len(b) < 14 {
		return Header{}, ErrNeedMore
	}
	fam := b[13]
	var addrLen int
	switch fam {
	case famUnspec:
		if cmd == v2Proxy {
			return Header{}, ErrMalformed // a PROXY with no address: go-proxyproto refuses it too
		}
	case famTCP4, famUDP4:
		addrLen = v2AddrLen4
	case famTCP6, famUDP6:
		addrLen = v2AddrLen6
	case famUnixStr, famUnixDgr:
		addrLen = v2AddrLenUnix
	default:
		return Header{}, ErrMalformed
	}
	if len(b) < 16 {
		return Header{}, ErrNeedMore
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	if n > MaxV2Payload || n < addrLen && cmd == v2Proxy {
		return Header{}, ErrMalformed
	}
	h := Header{Version: 2, Len: 16 + n}
	if len(b) < h.Len {
		return Header{}, ErrNeedMore
	}
	if cmd == v2Local {
		return h, nil // a proxy's own connection (a health check): the socket's addresses hold
	}
	a := b[16:]
	switch addrLen {
	case v2AddrLen4:
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	case v2AddrLen6:
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), binary.BigEndian.Uint16(a[32:34]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), binary.BigEndian.Uint16(a[34:36]))
	}
	return h, nil
}

// AppendV1 appends a v1 header for a connection from src to dst: TCP4 when both are IPv4
// (v4-mapped ones too), TCP6 otherwise (an IPv4 address beside an IPv6 one is written
// v4-mapped, as the spec wants one family). Zones are dropped. When either is invalid it
// appends "PROXY UNKNOWN\r\n". It allocates nothing when dst has MaxV1Len bytes spare.
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	if !src.IsValid() || !dst.IsValid() {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	s, d, four := family(src.Addr(), dst.Addr())
	if four {
		b = append(b, "PROXY TCP4 "...)
	} else {
		b = append(b, "PROXY TCP6 "...)
	}
	b = s.AppendTo(b)
	b = append(b, ' ')
	b = d.AppendTo(b)
	b = append(b, ' ')
	b = appendPort(b, src.Port())
	b = append(b, ' ')
	b = appendPort(b, dst.Port())
	return append(b, '\r', '\n')
}

func appendPort(b []byte, p uint16) []byte {
	var d [5]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + p%10)
		p /= 10
		if p == 0 {
			return append(b, d[i:]...)
		}
	}
}

// family returns the two addresses in one family, without zones, and whether it is IPv4.
func family(s, d netip.Addr) (netip.Addr, netip.Addr, bool) {
	s, d = s.WithZone(""), d.WithZone("")
	if s.Unmap().Is4() && d.Unmap().Is4() {
		return s.Unmap(), d.Unmap(), true
	}
	return netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16()), false
}

// AppendV2 appends a v2 PROXY header over TCP for a connection from src to dst, with no
// TLVs: 28 bytes when both addresses are IPv4 (v4-mapped ones too), V2Len otherwise. When
// either is invalid it appends the LOCAL header instead. It allocates nothing when dst has
// V2Len bytes spare.
func AppendV2(b []byte, src, dst netip.AddrPort) []byte {
	if !src.IsValid() || !dst.IsValid() {
		return AppendV2Local(b)
	}
	s, d, four := family(src.Addr(), dst.Addr())
	b = append(b, sigV2...)
	if four {
		b = append(b, v2Proxy, famTCP4, 0, v2AddrLen4)
		s4, d4 := s.As4(), d.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, v2Proxy, famTCP6, 0, v2AddrLen6)
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// AppendV2Local appends the 16-byte v2 LOCAL header: a connection the proxy opens on its own
// behalf (a health probe), for which the receiver uses the socket's addresses.
func AppendV2Local(b []byte) []byte {
	b = append(b, sigV2...)
	return append(b, v2Local, famUnspec, 0, 0)
}
