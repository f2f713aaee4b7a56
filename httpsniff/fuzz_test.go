package httpsniff

import (
	"slices"
	"strings"
	"testing"
)

// FuzzParse checks checkInvariants on any input: no panic, slices inside the input, Len
// stable under truncation and appending, decisions on prefixes kept, resumed parsing equal
// to parsing from scratch. Its seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		checkInvariants(t, b)
	})
}

// FuzzCookie compares Cookie with a plain strings-based reading of RFC 6265 §5.4.
func FuzzCookie(f *testing.F) {
	f.Add("a=1; b=2", "b")
	f.Add(`xlb_srv=1; lb_srv="2"`, "lb_srv")
	f.Add(" ;=; a = \t\"\" ;", "a")
	f.Add("a=1;a=2", "a")
	f.Fuzz(func(t *testing.T, header, name string) {
		if strings.ContainsAny(header, "\r\n") {
			return // would start another header line
		}
		b := []byte("GET / HTTP/1.1\r\nHost: h\r\nCookie:" + header + "\r\n\r\n")
		h, err := Parse(b)
		if err != nil {
			return // control characters: not a valid header value
		}
		v, ok := h.Cookie(name)
		if !inside(b, v) {
			t.Fatalf("Cookie(%q) = %q: not a view into the head", name, v)
		}
		want, wantOK := cookieByStrings(header, name)
		if ok != wantOK || string(v) != want {
			t.Fatalf("Cookie:%s\nCookie(%q) = %q, %t; want %q, %t", header, name, v, ok, want, wantOK)
		}
	})
}

func cookieByStrings(header, name string) (string, bool) {
	if name == "" {
		return "", false
	}
	for _, pair := range strings.Split(header, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || strings.Trim(k, " \t") != name {
			continue
		}
		v = strings.Trim(v, " \t")
		if len(v) >= 2 && strings.HasPrefix(v, `"`) && strings.HasSuffix(v, `"`) {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

// FuzzParseClientHello checks ParseClientHello on any input: no panic, decisions kept on
// longer input, fields within their bounds. Its seeds, real ClientHellos among them, are in
// testdata/fuzz/FuzzParseClientHello; TestClientHelloFuzzOracle holds the same seeds, and
// mutations of them, to crypto/tls.
func FuzzParseClientHello(f *testing.F) {
	f.Add(helloWith(extServerName, []byte{0, 4, 0, 0, 1, 'x'}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseClientHello(b)
		if err != nil && err != ErrNeedMore && err != ErrBadClientHello {
			t.Fatalf("unexpected error %v", err)
		}
		if err != nil && (h.ECH || h.nameLen != 0 || h.alpnLen != 0) {
			t.Fatalf("error %v with a non-zero ClientHello", err)
		}
		for _, p := range h.ALPN() {
			if p == "" || !h.HasALPN(p) {
				t.Fatalf("ALPN %q", h.ALPN())
			}
		}
		if err != ErrNeedMore {
			longer := append(slices.Clone(b), 0x16, 3, 1, 0, 1, 1)
			h2, err2 := ParseClientHello(longer)
			if err2 != err || h2 != h {
				t.Fatalf("decision changed with more bytes: %v then %v", err, err2)
			}
		}
	})
}
