package proxyhdr

import (
	"fmt"
	"net/netip"
	"strings"
)

// Version is the PROXY protocol version lb sends to a backend; 0 sends none.
type Version uint8

// The versions; None is the zero Version.
const (
	None Version = 0
	V1   Version = 1
	V2   Version = 2
)

// ParseVersion reads "v1" or "v2", and "" as None.
func ParseVersion(s string) (Version, error) {
	switch s {
	case "":
		return None, nil
	case "v1":
		return V1, nil
	case "v2":
		return V2, nil
	}
	return None, fmt.Errorf("PROXY protocol version %q: want v1 or v2", s)
}

// String is "v1", "v2" or "none".
func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "none"
}

// Append appends the header of version v for a connection from src to dst (AppendV1 or
// AppendV2), or nothing for None.
func Append(b []byte, v Version, src, dst netip.AddrPort) []byte {
	switch v {
	case V1:
		return AppendV1(b, src, dst)
	case V2:
		return AppendV2(b, src, dst)
	}
	return b
}

// Trusted is the set of peers whose PROXY headers lb believes: the upstream balancers.
// The zero Trusted trusts no one.
type Trusted []netip.Prefix

// ParseTrusted reads a comma-separated list of CIDRs (10.0.0.0/8, 2001:db8::/32) and single
// addresses (192.0.2.7); blanks around items are ignored, and so are host bits under a mask
// (10.1.2.3/8 is 10.0.0.0/8). "" is the empty set.
func ParseTrusted(list string) (Trusted, error) {
	var t Trusted
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" && strings.TrimSpace(list) == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(item, "/") {
			p, err = netip.ParsePrefix(item)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(item); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%q: want a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an address", item)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96) // so Contains matches IPv4 peers
		}
		t = append(t, p.Masked())
	}
	return t, nil
}

// Contains reports whether peer (a v4-mapped address too) is trusted. It allocates nothing.
func (t Trusted) Contains(peer netip.Addr) bool {
	peer = peer.Unmap().WithZone("")
	for _, p := range t {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// String lists the prefixes, comma-separated, for logs.
func (t Trusted) String() string {
	s := make([]string, len(t))
	for i, p := range t {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
