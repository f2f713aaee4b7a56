package httpsniff

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"
)

// chromeHead is what Chrome sends for a navigation on a site with a handful of cookies.
const chromeHead = "GET /dashboard/settings?tab=profile HTTP/1.1\r\n" +
	"Host: app.example.com\r\n" +
	"Connection: keep-alive\r\n" +
	"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n" +
	"sec-ch-ua-mobile: ?0\r\n" +
	"sec-ch-ua-platform: \"Linux\"\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n" +
	"Sec-Fetch-Site: same-origin\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"Sec-Fetch-User: ?1\r\n" +
	"Sec-Fetch-Dest: document\r\n" +
	"Referer: https://app.example.com/dashboard\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Cookie: _ga=GA1.1.1234567890.1700000000; theme=dark; session_id=9f8e7d6c5b4a39281706f5e4d3c2b1a0; " +
	"csrftoken=abcDEF123ghiJKL456; _ga_XYZ=GS1.1.1700000000.3.1.1700000100.0.0.0; lb_srv=backend-2\r\n" +
	"\r\n"

// tlsHello is the start of a TLS 1.3 ClientHello record as curl sends it.
const tlsHello = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1f\x00\x00"

type cookieWant struct {
	name, value string
	ok          bool
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		kind    Kind
		err     error
		method  string
		target  string
		proto   string
		host    *string // nil: no Host header
		len     int     // 0: the whole input
		cookies []cookieWant
	}{
		{
			name: "chrome-get", in: chromeHead, kind: KindHTTP1,
			method: "GET", target: "/dashboard/settings?tab=profile", proto: "HTTP/1.1", host: ptr("app.example.com"),
			cookies: []cookieWant{
				{"lb_srv", "backend-2", true},
				{"_ga", "GA1.1.1234567890.1700000000", true},
				{"session_id", "9f8e7d6c5b4a39281706f5e4d3c2b1a0", true},
				{"theme", "dark", true},
				{"lb_sr", "", false},
				{"LB_SRV", "", false},
				{"Connection", "", false},
				{"", "", false},
			},
		},
		{
			name: "post-with-body",
			in:   "POST /api/v1/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 11\r\n\r\nhello world",
			kind: KindHTTP1, method: "POST", target: "/api/v1/items", proto: "HTTP/1.1", host: ptr("api.example.com"),
			len: len("POST /api/v1/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 11\r\n\r\n"),
		},
		{
			name: "pipelined",
			in:   "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/a", proto: "HTTP/1.1", host: ptr("a"),
			len: len("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"),
		},
		{
			name: "several-cookie-headers",
			in:   "GET / HTTP/1.1\r\nCookie: a=1\r\nX-Other: a=9\r\ncookie: b=2; a=3\r\nHost: h\r\nCOOKIE: c=4\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("h"),
			cookies: []cookieWant{{"a", "1", true}, {"b", "2", true}, {"c", "4", true}, {"X-Other", "", false}},
		},
		{
			name: "quoted-cookies",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nCookie: q=\"quoted value\"; e=\"\"; one=\"; plain=x\"y\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("h"),
			cookies: []cookieWant{{"q", "quoted value", true}, {"e", "", true}, {"one", "\"", true}, {"plain", "x\"y", true}},
		},
		{
			name: "cookie-name-suffix-prefix",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nCookie: xlb_srv=1; lb_srv_old=3; lb_srv=2\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("h"),
			cookies: []cookieWant{{"lb_srv", "2", true}, {"xlb_srv", "1", true}, {"lb_srv_old", "3", true}, {"lb", "", false}, {"srv", "", false}},
		},
		{
			name: "cookie-whitespace-and-oddities",
			in:   "GET / HTTP/1.1\r\nHost: h\r\nCookie:a=1;b=2 ;  c = 3\t;\td=4;;noeq; =anon; e=\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("h"),
			cookies: []cookieWant{{"a", "1", true}, {"b", "2", true}, {"c", "3", true}, {"d", "4", true}, {"e", "", true}, {"noeq", "", false}},
		},
		{
			name: "header-names-any-case",
			in:   "GET / HTTP/1.1\r\nhOsT: \t example.org \t\r\ncOOkIe: k=v\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("example.org"),
			cookies: []cookieWant{{"k", "v", true}, {"K", "", false}},
		},
		{
			name: "lf-only", in: "GET /x HTTP/1.1\nHost: lf.example\nCookie: s=1\n\nbody",
			kind: KindHTTP1, method: "GET", target: "/x", proto: "HTTP/1.1", host: ptr("lf.example"),
			len: len("GET /x HTTP/1.1\nHost: lf.example\nCookie: s=1\n\n"), cookies: []cookieWant{{"s", "1", true}},
		},
		{
			name: "mixed-line-ends", in: "GET / HTTP/1.1\r\nHost: m\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("m"),
		},
		{
			name: "no-headers", in: "GET / HTTP/1.1\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1",
		},
		{
			// The ends of the token ranges: 'Z' starts a method, '9', 'z' and 'Z' are token
			// characters, and 9 is an HTTP/1 minor version.
			name: "token-range-ends", in: "Z9z / HTTP/1.9\r\nzZ-9: v\r\n\r\n",
			kind: KindHTTP1, method: "Z9z", target: "/", proto: "HTTP/1.9",
		},
		{
			name: "head", in: "HEAD /index.html HTTP/1.1\r\nHost: h\r\n\r\n",
			kind: KindHTTP1, method: "HEAD", target: "/index.html", proto: "HTTP/1.1", host: ptr("h"),
		},
		{
			name: "options-asterisk", in: "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
			kind: KindHTTP1, method: "OPTIONS", target: "*", proto: "HTTP/1.1", host: ptr("h"),
		},
		{
			name: "connect-authority", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			kind: KindHTTP1, method: "CONNECT", target: "example.com:443", proto: "HTTP/1.1", host: ptr("example.com:443"),
		},
		{
			name: "absolute-form", in: "GET http://example.com/a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "http://example.com/a?b=c", proto: "HTTP/1.1", host: ptr("example.com"),
		},
		{
			name: "http10-no-host", in: "GET / HTTP/1.0\r\nUser-Agent: old\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.0",
		},
		{
			name: "empty-host", in: "GET / HTTP/1.1\r\nHost:  \r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr(""),
		},
		{
			name: "first-host-wins", in: "GET / HTTP/1.1\r\nHost: one\r\nHost: two\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("one"),
		},
		{
			name: "not-quite-host", in: "GET / HTTP/1.1\r\nHosts: no\r\nX-Host: no\r\nHost: yes\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/", proto: "HTTP/1.1", host: ptr("yes"),
		},
		{
			name: "obs-text-in-value", in: "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n",
			kind: KindHTTP1, method: "GET", target: "/caf\xc3\xa9", proto: "HTTP/1.1", host: ptr("h"),
		},
		{
			name: "method-16", in: "ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n",
			kind: KindHTTP1, method: "ABCDEFGHIJKLMNOP", target: "/", proto: "HTTP/1.1",
		},

		// Not complete yet.
		{name: "empty", in: "", err: ErrNeedMore},
		{name: "one-byte", in: "G", err: ErrNeedMore},
		{name: "request-line-only", in: "GET / HTTP/1.1\r\n", err: ErrNeedMore},
		{name: "no-final-line", in: "GET / HTTP/1.1\r\nHost: a\r\n", err: ErrNeedMore},
		{name: "final-cr-only", in: "GET / HTTP/1.1\r\nHost: a\r\n\r", err: ErrNeedMore},
		{name: "h2-prefix-1", in: "P", err: ErrNeedMore},
		{name: "h2-prefix-line", in: "PRI * HTTP/2.0\r\n", err: ErrNeedMore},
		{name: "h2-prefix-23", in: h2Preface[:23], err: ErrNeedMore},
		{name: "tls-1", in: "\x16", err: ErrNeedMore},
		{name: "tls-2", in: "\x16\x03", err: ErrNeedMore},

		// Other protocols.
		{name: "h2-preface", in: h2Preface, kind: KindHTTP2},
		{name: "h2-preface-settings", in: h2Preface + "\x00\x00\x12\x04\x00\x00\x00\x00\x00", kind: KindHTTP2},
		{name: "tls-clienthello", in: tlsHello, kind: KindTLS},
		{name: "tls-header-only", in: "\x16\x03\x03", kind: KindTLS},
		{name: "tls-1.3-version", in: "\x16\x03\x04", kind: KindTLS}, // the highest minor accepted
		{name: "tls-bad-major", in: "\x16\x01", kind: KindOther},
		{name: "tls-bad-minor", in: "\x16\x03\x05", kind: KindOther},
		{name: "ssh-banner", in: "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", kind: KindOther},
		{name: "binary", in: "\x00\x01\x02\xff\xfe", kind: KindOther},
		{name: "high-bytes", in: "\xde\xad\xbe\xef", kind: KindOther},
		{name: "lowercase-method", in: "get / HTTP/1.1\r\n\r\n", kind: KindOther},
		{name: "method-17", in: "ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n", kind: KindOther},
		{name: "method-17-prefix", in: "ABCDEFGHIJKLMNOPQ", kind: KindOther},
		{name: "leading-crlf", in: "\r\nGET / HTTP/1.1\r\n\r\n", kind: KindOther},
		{name: "method-then-crlf", in: "GET\r\n", kind: KindOther},
		{name: "json", in: "{\"a\":1}", kind: KindOther},
		{name: "proxy-protocol-v2", in: "\r\n\r\n\x00\r\nQUIT\n", kind: KindOther},
		{name: "method-bad-char", in: "GE(T / HTTP/1.1\r\n\r\n", kind: KindOther},

		// Started like HTTP/1.x, but broken.
		{name: "http2-version", in: "GET / HTTP/2.0\r\n\r\n", err: ErrMalformed},
		{name: "h2-preface-diverges", in: "PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n", err: ErrMalformed},
		{name: "version-suffix", in: "GET / HTTP/1.1x\r\n\r\n", err: ErrMalformed},
		{name: "version-lowercase", in: "GET / http/1.1\r\n\r\n", err: ErrMalformed},
		{name: "version-missing", in: "GET /\r\n\r\n", err: ErrMalformed},
		{name: "two-spaces", in: "GET  / HTTP/1.1\r\n\r\n", err: ErrMalformed},
		{name: "empty-target", in: "GET  HTTP/1.1\r\n\r\n", err: ErrMalformed},
		{name: "trailing-space", in: "GET / HTTP/1.1 \r\n\r\n", err: ErrMalformed},
		{name: "space-in-target", in: "GET /a b HTTP/1.1\r\n\r\n", err: ErrMalformed},
		{name: "nul-in-target", in: "GET /a\x00b HTTP/1.1\r\n\r\n", err: ErrMalformed},
		{name: "double-cr", in: "GET / HTTP/1.1\r\r\n\r\n", err: ErrMalformed},
		{name: "header-without-colon", in: "GET / HTTP/1.1\r\nHost example.com\r\n\r\n", err: ErrMalformed},
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n", err: ErrMalformed},
		{name: "obs-fold-tab", in: "GET / HTTP/1.1\r\nX: a\r\n\tfolded\r\n\r\n", err: ErrMalformed},
		{name: "space-before-colon", in: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", err: ErrMalformed},
		{name: "empty-name", in: "GET / HTTP/1.1\r\n: a\r\n\r\n", err: ErrMalformed},
		{name: "control-in-value", in: "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", err: ErrMalformed},
		{name: "bare-cr-in-value", in: "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", err: ErrMalformed},
		{name: "del-in-value", in: "GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", err: ErrMalformed},
		{name: "bad-char-in-name", in: "GET / HTTP/1.1\r\nX(y): a\r\n\r\n", err: ErrMalformed},
	}
	for i, tt := range tests {
		name := tt.name
		if name == "" {
			name = fmt.Sprintf("test_index_%d", i)
		}
		t.Run(name, func(t *testing.T) {
			b := []byte(tt.in)
			h, err := Parse(b)
			if err != tt.err {
				t.Fatalf("err = %v; want %v", err, tt.err)
			}
			if h.Kind != tt.kind {
				t.Fatalf("Kind = %v; want %v", h.Kind, tt.kind)
			}
			checkInvariants(t, b)
			if tt.kind != KindHTTP1 {
				return
			}
			wantLen := tt.len
			if wantLen == 0 {
				wantLen = len(tt.in)
			}
			if h.Len != wantLen {
				t.Errorf("Len = %d; want %d", h.Len, wantLen)
			}
			for _, f := range []struct {
				field     string
				got, want string
			}{
				{"Method", string(h.Method), tt.method},
				{"Target", string(h.Target), tt.target},
				{"Proto", string(h.Proto), tt.proto},
			} {
				if f.got != f.want {
					t.Errorf("%s = %q; want %q", f.field, f.got, f.want)
				}
			}
			switch {
			case tt.host == nil && h.Host != nil:
				t.Errorf("Host = %q; want nil", h.Host)
			case tt.host != nil && (h.Host == nil || string(h.Host) != *tt.host):
				t.Errorf("Host = %q (nil: %t); want %q", h.Host, h.Host == nil, *tt.host)
			}
			for _, c := range tt.cookies {
				v, ok := h.Cookie(c.name)
				if ok != c.ok || string(v) != c.value {
					t.Errorf("Cookie(%q) = %q, %t; want %q, %t", c.name, v, ok, c.value, c.ok)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestStartsLikeHTTP1(t *testing.T) {
	for in, want := range map[string]bool{
		"GET / HTTP/1.1\r\nHost: a\r\n": true, // partial
		"POST ":                         true,
		"GET":                           false, // the method may go on: not yet
		"get / HTTP/1.1\r\n":            false,
		"SSH-2.0-OpenSSH\r\n":           false,
		tlsHello:                        false,
		h2Preface:                       false,
		"":                              false,
	} {
		if got := StartsLikeHTTP1([]byte(in)); got != want {
			t.Errorf("StartsLikeHTTP1(%q) = %t, want %t", in, got, want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		KindUnknown: "unknown", KindEmpty: "empty", KindHTTP1: "http1",
		KindHTTP2: "http2", KindTLS: "tls", KindOther: "other", Kind(6): "Kind(6)", Kind(42): "Kind(42)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q; want %q", uint8(k), got, want)
		}
	}
}

func TestCookieOnZeroHead(t *testing.T) {
	var h Head
	if v, ok := h.Cookie("a"); ok || v != nil {
		t.Fatalf("Cookie on a zero Head = %q, %t", v, ok)
	}
}

// outcome is what Parse said about some bytes, in comparable form.
type outcome struct {
	kind                        Kind
	err                         error
	len                         int
	method, target, proto, host string
	hostNil                     bool
	fields                      string
}

func outcomeOf(h Head, err error) outcome {
	return outcome{
		kind: h.Kind, err: err, len: h.Len,
		method: string(h.Method), target: string(h.Target), proto: string(h.Proto),
		host: string(h.Host), hostNil: h.Host == nil, fields: string(h.fields),
	}
}

// inside reports whether s is nil or a view into b's array within b.
func inside(b, s []byte) bool {
	if s == nil {
		return true
	}
	if len(b) == 0 {
		return len(s) == 0
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	return p >= base && p+uintptr(len(s)) <= base+uintptr(len(b))
}

// probeCookies are the names checkInvariants asks every complete head for.
var probeCookies = []string{"lb_srv", "a", "session_id", "=", ";", " ", "\"", "cookie"}

// checkInvariants checks what must hold for any b, whatever Parse decides; the table
// and the fuzz targets share it.
func checkInvariants(t testing.TB, b []byte) {
	t.Helper()
	h, err := Parse(b)
	got := outcomeOf(h, err)
	switch {
	case err == nil:
		if h.Kind < KindHTTP1 || h.Kind > KindOther {
			t.Fatalf("Parse(%q): nil error with Kind %v", b, h.Kind)
		}
	case err == ErrNeedMore, err == ErrMalformed:
		if got != (outcome{err: err, hostNil: true}) {
			t.Fatalf("Parse(%q): %v with a non-zero Head %+v", b, err, got)
		}
	default:
		t.Fatalf("Parse(%q): unexpected error %v", b, err)
	}
	if len(b) == 0 && err != ErrNeedMore {
		t.Fatalf("Parse(empty) = %+v; want ErrNeedMore", got)
	}
	if starts := StartsLikeHTTP1(b); (h.Kind == KindHTTP1 || err == ErrMalformed) && !starts || h.Kind > KindHTTP1 && starts {
		t.Fatalf("StartsLikeHTTP1(%q) = %t with Parse giving %+v", b, starts, got)
	}
	if h.Len < 0 || h.Len > len(b) || (h.Kind != KindHTTP1) != (h.Len == 0) {
		t.Fatalf("Parse(%q): Len %d with Kind %v", b, h.Len, h.Kind)
	}
	for _, s := range [][]byte{h.Method, h.Target, h.Proto, h.Host, h.fields} {
		if !inside(b, s) {
			t.Fatalf("Parse(%q): slice %q is not inside the input", b, s)
		}
	}
	for _, name := range probeCookies {
		if v, ok := h.Cookie(name); !inside(b, v) || (!ok && v != nil) {
			t.Fatalf("Parse(%q).Cookie(%q) = %q, %t: not a view into the input", b, name, v, ok)
		}
	}

	if h.Kind == KindHTTP1 {
		if again := outcomeOf(Parse(b[:h.Len])); again != got {
			t.Fatalf("Parse(%q) = %+v but Parse(b[:Len]) = %+v", b, got, again)
		}
		more := append(bytes.Clone(b), "\x00garbage\r\n\r\nGET / HTTP/1.1\r\n\r\n"...)
		if again := outcomeOf(Parse(more)); again != got {
			t.Fatalf("Parse(%q) = %+v but with bytes appended %+v", b, got, again)
		}
	}

	// A decision taken on a prefix must hold for the whole input: the caller relies on it to stop
	// reading early. Check every prefix of small inputs, a sample of big ones.
	step := 1
	if len(b) > 2048 {
		step = len(b) / 512
	}
	var p Parser // fed the growing prefixes, as a caller reading the socket feeds it
	decided := false
	for i := 0; i <= len(b); i += step {
		pre := outcomeOf(Parse(b[:i]))
		if pre.err != ErrNeedMore {
			decided = true
			if pre != got {
				t.Fatalf("Parse(%q) = %+v but its prefix %q gives %+v", b, got, b[:i], pre)
			}
		}
		if h.Kind == KindHTTP1 && i < h.Len && pre.err != ErrNeedMore {
			t.Fatalf("prefix %q of a %d-byte head gives %+v; want ErrNeedMore", b[:i], h.Len, pre)
		}
		if inc := outcomeOf(p.Parse(b[:i])); inc != pre {
			t.Fatalf("resumed parse of %q = %+v; Parse = %+v", b[:i], inc, pre)
		}
		if decided {
			break // the caller stops here too
		}
	}
	// Whether p has decided (and must keep its answer on the longer b) or not (and must now
	// agree with Parse on the whole), it gives what Parse gives.
	if inc := outcomeOf(p.Parse(b)); inc != got {
		t.Fatalf("resumed parse of %q = %+v; Parse = %+v", b, inc, got)
	}
}

func TestInvariantsOnSplits(t *testing.T) {
	// Every table input already went through checkInvariants; these add heads big enough to
	// take the sampled path, and one that ends exactly at the buffer's end.
	big := strings.Replace(chromeHead, "\r\n\r\n", "\r\nX-Pad: "+strings.Repeat("p", 5000)+"\r\n\r\n", 1)
	for _, in := range []string{big, big + "body", chromeHead[:len(chromeHead)-1], strings.Repeat("GET ", 1000)} {
		checkInvariants(t, []byte(in))
	}
	if _, err := Parse([]byte(big)); err != nil {
		t.Fatalf("Parse(big head) = %v", err)
	}
}

// splitInputs are heads and non-heads that TestParserSplits and TestDecisionsNeverChange feed
// a Parser piece by piece.
var splitInputs = []string{
	chromeHead,
	chromeHead + chromeHead,
	strings.Replace(chromeHead, "\r\n\r\n", "\r\nX-Pad: "+strings.Repeat("p", 5000)+"\r\n\r\n", 1),
	"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
	"GET /x HTTP/1.1\nHost: lf.example\nCookie: s=1\n\nbody",
	"GET / HTTP/1.1\r\n\r\n",
	tlsHello,
	h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
	"PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n",
	"SSH-2.0-OpenSSH_9.6\r\nmore",
	"GET / HTTP/1.1\r\nHost a\r\n\r\nrest",
	"GET / HTTP/2.0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n", // never decided
}

// feed gives p b[:cut] for each cut in turn, checking on the way that every answer after the
// first decision repeats it and that p scans each byte for a line end about once, and returns
// the last answer.
func feed(t *testing.T, p *Parser, b []byte, cuts []int) outcome {
	t.Helper()
	var first *outcome
	var last outcome
	for _, cut := range cuts {
		last = outcomeOf(p.Parse(b[:cut]))
		switch {
		case first != nil:
			if last != *first {
				t.Fatalf("Parser on %q changed its decision %+v to %+v", b[:cut], *first, last)
			}
		case last.err != ErrNeedMore:
			first = &last
		case p.seen != cut && cut > len(h2Preface):
			// Resumption is what keeps a trickle linear: past the bounded first bytes,
			// the next call must go on from the end of this b, not from the start.
			t.Fatalf("Parser on %d bytes of %q will rescan from %d", cut, b, p.seen)
		}
	}
	return last
}

func TestParserSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, in := range splitInputs {
		b := []byte(in)
		want := outcomeOf(Parse(b))

		var bytewise []int
		for i := range len(b) + 1 {
			bytewise = append(bytewise, i)
		}
		var p Parser
		if got := feed(t, &p, b, bytewise); got != want {
			t.Fatalf("Parser fed %q byte by byte = %+v; Parse = %+v", b, got, want)
		}

		for range 50 {
			var cuts []int
			for cut := 0; cut < len(b); {
				cut = min(len(b), cut+1+rng.IntN(64))
				cuts = append(cuts, cut)
			}
			p = Parser{}
			if got := feed(t, &p, b, cuts); got != want {
				t.Fatalf("Parser fed %q in pieces ending at %v = %+v; Parse = %+v", b, cuts, got, want)
			}
		}
	}
}

// TestDecisionsNeverChange checks that once Parse decides on a prefix, every longer input,
// whatever follows, gets the same answer from Parse and from a Parser that saw the prefix.
func TestDecisionsNeverChange(t *testing.T) {
	tails := []string{"", "\r\n\r\n", "\x00garbage", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\n\n"}
	for _, in := range splitInputs {
		b := []byte(in)
		for i := range len(b) + 1 {
			pre := outcomeOf(Parse(b[:i]))
			if pre.err == ErrNeedMore {
				continue
			}
			for _, tail := range tails {
				longer := append(b[:i:i], tail...)
				var p Parser
				p.Parse(longer[:i])
				if got := outcomeOf(p.Parse(longer)); got != pre {
					t.Fatalf("Parser decided %+v on %q but says %+v on %q", pre, b[:i], got, longer)
				}
				if got := outcomeOf(Parse(longer)); got != pre {
					t.Fatalf("Parse decided %+v on %q but says %+v on %q", pre, b[:i], got, longer)
				}
			}
			break
		}
	}
}
