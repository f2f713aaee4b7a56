package httpsniff

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// appResponse is what a typical web app behind nginx answers on a login: a session cookie,
// a few more cookies, caching and security headers, and a body.
const appResponse = "HTTP/1.1 200 OK\r\n" +
	"Server: nginx/1.24.0\r\n" +
	"Date: Tue, 14 May 2024 09:21:07 GMT\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Length: 13\r\n" +
	"Connection: keep-alive\r\n" +
	"Vary: Accept-Encoding, Cookie\r\n" +
	"Cache-Control: private, no-cache, no-store, must-revalidate\r\n" +
	"Set-Cookie: csrftoken=abcDEF123ghiJKL456; expires=Tue, 13 May 2025 09:21:07 GMT; Max-Age=31449600; Path=/; SameSite=Lax\r\n" +
	"Set-Cookie: theme=dark; Path=/\r\n" +
	"Set-Cookie: sessionid=9f8e7d6c5b4a39281706f5e4d3c2b1a0; expires=Tue, 28 May 2024 09:21:07 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax; Secure\r\n" +
	"X-Frame-Options: DENY\r\n" +
	"X-Content-Type-Options: nosniff\r\n" +
	"Referrer-Policy: same-origin\r\n" +
	"Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n" +
	"\r\n" +
	"<html></html>"

// appResponseHead is appResponse without its body.
var appResponseHead = appResponse[:strings.Index(appResponse, "\r\n\r\n")+4]

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		err     error
		status  int
		proto   string
		interim bool
		len     int // 0: the whole input
		cookies []cookieWant
	}{
		{
			name: "app-200-with-body", in: appResponse, status: 200, proto: "HTTP/1.1", len: len(appResponseHead),
			cookies: []cookieWant{
				{"sessionid", "9f8e7d6c5b4a39281706f5e4d3c2b1a0", true},
				{"csrftoken", "abcDEF123ghiJKL456", true},
				{"theme", "dark", true},
				{"Path", "", false},
				{"expires", "", false},
				{"HttpOnly", "", false},
				{"SESSIONID", "", false},
				{"session", "", false},
				{"", "", false},
			},
		},
		{
			name:   "chunked",
			in:     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			status: 200, proto: "HTTP/1.1", len: len("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"),
		},
		{name: "204", in: "HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n", status: 204, proto: "HTTP/1.1"},
		{name: "304", in: "HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nSet-Cookie: s=1\r\n\r\n", status: 304, proto: "HTTP/1.1", cookies: []cookieWant{{"s", "1", true}}},
		{
			// The answer to HEAD announces a body it does not send: the head is all there is.
			name: "head-answer", in: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n",
			status: 200, proto: "HTTP/1.1",
		},
		{
			name: "100-continue-then-200", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			status: 100, proto: "HTTP/1.1", interim: true, len: len("HTTP/1.1 100 Continue\r\n\r\n"),
		},
		{
			name: "103-early-hints-then-200",
			in: "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nSet-Cookie: sid=abc\r\nContent-Length: 0\r\n\r\n",
			status: 103, proto: "HTTP/1.1", interim: true,
			len:     len("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"),
			cookies: []cookieWant{{"sid", "", false}}, // the next head's cookie is not this one's
		},
		{
			name: "101-switching-protocols",
			in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello",
			status: 101, proto: "HTTP/1.1",
			len: len("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
		},
		{
			name: "pipelined", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nSet-Cookie: a=1\r\n\r\nxHTTP/1.1 404 Not Found\r\nSet-Cookie: b=2\r\n\r\n",
			status: 200, proto: "HTTP/1.1", len: len("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nSet-Cookie: a=1\r\n\r\n"),
			cookies: []cookieWant{{"a", "1", true}, {"b", "", false}},
		},
		{name: "http10", in: "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody", status: 200, proto: "HTTP/1.0", len: len("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")},
		{name: "no-reason", in: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", status: 200, proto: "HTTP/1.1"},
		{name: "empty-reason", in: "HTTP/1.1 500 \r\n\r\n", status: 500, proto: "HTTP/1.1"},
		{name: "long-reason", in: "HTTP/1.1 404 Not Found, sorry\t(really)\r\n\r\n", status: 404, proto: "HTTP/1.1"},
		{name: "obs-text-reason", in: "HTTP/1.1 200 Tr\xe8s bien\r\n\r\n", status: 200, proto: "HTTP/1.1"},
		{name: "status-999", in: "HTTP/1.1 999 Custom\r\n\r\n", status: 999, proto: "HTTP/1.1"},
		{name: "no-headers", in: "HTTP/1.1 200 OK\r\n\r\n", status: 200, proto: "HTTP/1.1"},
		{name: "lf-only", in: "HTTP/1.1 302 Found\nLocation: /\nSet-Cookie: s=1\n\nbody", status: 302, proto: "HTTP/1.1", len: len("HTTP/1.1 302 Found\nLocation: /\nSet-Cookie: s=1\n\n"), cookies: []cookieWant{{"s", "1", true}}},
		{name: "mixed-line-ends", in: "HTTP/1.1 200 OK\nA: b\r\n\n", status: 200, proto: "HTTP/1.1"},
		{
			name: "set-cookie-forms",
			in: "HTTP/1.1 200 OK\r\n" +
				"Set-Cookie: noeq; Path=/\r\n" + // no '=': ignored
				"set-cookie: lb=one\r\n" +
				"SET-COOKIE: lb=two\r\n" + // the first one wins
				"X-Set-Cookie: fake=1\r\n" +
				"Set-Cookie2: old=1\r\n" +
				"Set-Cookie:  spaced \t=\t v a l \t; Path=/\r\n" +
				"Set-Cookie: quoted=\"q v\"; Secure\r\n" +
				"Set-Cookie: eqs=a=b==; Path=/\r\n" +
				"Set-Cookie: gone=; Max-Age=0\r\n" +
				"Set-Cookie: attrs=v;Path=/;Domain=example.com\r\n" +
				"Set-Cookie: =nameless\r\n" +
				"Set-Cookie:;hidden=1\r\n" + // an empty pair: the rest are attributes
				"\r\n",
			status: 200, proto: "HTTP/1.1",
			cookies: []cookieWant{
				{"noeq", "", false}, {"lb", "one", true}, {"fake", "", false}, {"old", "", false},
				{"spaced", "v a l", true}, {"quoted", "q v", true}, {"eqs", "a=b==", true},
				{"gone", "", true}, {"attrs", "v", true}, {"Path", "", false}, {"Domain", "", false},
				{"Max-Age", "", false}, {"nameless", "", false}, {"hidden", "", false},
			},
		},
		{
			name:   "set-cookie-name-prefixes",
			in:     "HTTP/1.1 200 OK\r\nSet-Cookie: sid_old=1\r\nSet-Cookie: xsid=2\r\nSet-Cookie: sid=3\r\nSet-Cookie: si=4\r\n\r\n",
			status: 200, proto: "HTTP/1.1",
			cookies: []cookieWant{{"sid", "3", true}, {"sid_old", "1", true}, {"xsid", "2", true}, {"si", "4", true}, {"s", "", false}},
		},

		// Not complete yet.
		{name: "empty", in: "", err: ErrNeedMore},
		{name: "one-byte", in: "H", err: ErrNeedMore},
		{name: "proto-only", in: "HTTP/1.1", err: ErrNeedMore},
		{name: "status-only", in: "HTTP/1.1 200", err: ErrNeedMore},
		{name: "status-line", in: "HTTP/1.1 200 OK\r\n", err: ErrNeedMore},
		{name: "no-final-line", in: "HTTP/1.1 200 OK\r\nA: b\r\n", err: ErrNeedMore},
		{name: "final-cr-only", in: "HTTP/1.1 200 OK\r\nA: b\r\n\r", err: ErrNeedMore},

		// Not a valid head; most are ruled out on the first bytes.
		{name: "http2", in: "HTTP/2 200\r\n\r\n", err: ErrMalformed},
		{name: "http09-body", in: "<html>", err: ErrMalformed},
		{name: "lowercase-proto", in: "http/1.1 200 OK\r\n\r\n", err: ErrMalformed},
		{name: "leading-crlf", in: "\r\nHTTP/1.1 200 OK\r\n\r\n", err: ErrMalformed},
		{name: "ssh-banner", in: "SSH-2.0-OpenSSH_9.6\r\n", err: ErrMalformed},
		{name: "binary", in: "\x00\x01\x02", err: ErrMalformed},
		{name: "version-letter", in: "HTTP/1.x 200 OK\r\n\r\n", err: ErrMalformed},
		{name: "two-digit-status", in: "HTTP/1.1 20 OK\r\n\r\n", err: ErrMalformed},
		{name: "four-digit-status", in: "HTTP/1.1 2000 OK\r\n\r\n", err: ErrMalformed},
		{name: "status-0xx", in: "HTTP/1.1 099 Low\r\n\r\n", err: ErrMalformed},
		{name: "status-letters", in: "HTTP/1.1 2x0 OK\r\n\r\n", err: ErrMalformed},
		{name: "status-last-letter", in: "HTTP/1.1 20x OK\r\n\r\n", err: ErrMalformed},
		{name: "two-spaces", in: "HTTP/1.1  200 OK\r\n\r\n", err: ErrMalformed},
		{name: "tab-separator", in: "HTTP/1.1\t200 OK\r\n\r\n", err: ErrMalformed},
		{name: "status-then-letter", in: "HTTP/1.1 200OK\r\n\r\n", err: ErrMalformed},
		{name: "status-then-letter-early", in: "HTTP/1.1 200O", err: ErrMalformed}, // before the line ends
		{name: "double-cr-status", in: "HTTP/1.1 200\r\r\n\r\n", err: ErrMalformed},
		{name: "bare-cr-in-reason", in: "HTTP/1.1 200 O\rK\r\n\r\n", err: ErrMalformed},
		{name: "nul-in-reason", in: "HTTP/1.1 200 O\x00K\r\n\r\n", err: ErrMalformed},
		{name: "header-without-colon", in: "HTTP/1.1 200 OK\r\nServer nginx\r\n\r\n", err: ErrMalformed},
		{name: "obs-fold", in: "HTTP/1.1 200 OK\r\nSet-Cookie: a=1;\r\n Path=/\r\n\r\n", err: ErrMalformed},
		{name: "obs-fold-tab", in: "HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n", err: ErrMalformed},
		{name: "space-before-colon", in: "HTTP/1.1 200 OK\r\nSet-Cookie : a=1\r\n\r\n", err: ErrMalformed},
		{name: "empty-name", in: "HTTP/1.1 200 OK\r\n: a\r\n\r\n", err: ErrMalformed},
		{name: "bare-cr-in-value", in: "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\rb=2\r\n\r\n", err: ErrMalformed},
		{name: "control-in-value", in: "HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n", err: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.in)
			r, err := ParseResponse(b)
			if err != tt.err {
				t.Fatalf("err = %v; want %v", err, tt.err)
			}
			checkResponseInvariants(t, b)
			if err != nil {
				return
			}
			wantLen := tt.len
			if wantLen == 0 {
				wantLen = len(tt.in)
			}
			if r.Len != wantLen || r.Status != tt.status || string(r.Proto) != tt.proto || r.Interim() != tt.interim {
				t.Errorf("got Len %d, Status %d, Proto %q, Interim %t; want %d, %d, %q, %t",
					r.Len, r.Status, r.Proto, r.Interim(), wantLen, tt.status, tt.proto, tt.interim)
			}
			for _, c := range tt.cookies {
				v, ok := r.SetCookie(c.name)
				if ok != c.ok || string(v) != c.value {
					t.Errorf("SetCookie(%q) = %q, %t; want %q, %t", c.name, v, ok, c.value, c.ok)
				}
			}
		})
	}
}

func TestInterim(t *testing.T) {
	for status, want := range map[int]bool{100: true, 101: false, 102: true, 103: true, 199: true, 200: false, 204: false, 304: false, 0: false} {
		r := Response{Status: status}
		if r.Interim() != want {
			t.Errorf("Response{Status: %d}.Interim() = %t; want %t", status, !want, want)
		}
	}
}

// TestFinalAfterInterims walks the heads of a connection the way the balancer does: skip
// interim heads, each parsed by a fresh parser from where the last one ended, until the final
// one.
func TestFinalAfterInterims(t *testing.T) {
	in := []byte("HTTP/1.1 100 Continue\r\n\r\n" +
		"HTTP/1.1 103 Early Hints\nLink: </a.css>; rel=preload\n\n" +
		"HTTP/1.1 201 Created\r\nSet-Cookie: sid=xyz; Path=/\r\nContent-Length: 2\r\n\r\nok")
	var heads []int
	off := 0
	for {
		r, err := ParseResponse(in[off:])
		if err != nil {
			t.Fatalf("head at %d: %v", off, err)
		}
		heads = append(heads, r.Status)
		if !r.Interim() {
			if v, ok := r.SetCookie("sid"); !ok || string(v) != "xyz" {
				t.Errorf("final SetCookie(sid) = %q, %t", v, ok)
			}
			if body := string(in[off+r.Len:]); body != "ok" {
				t.Errorf("body after the final head = %q", body)
			}
			break
		}
		off += r.Len
	}
	if want := []int{100, 103, 201}; !equalInts(heads, want) {
		t.Errorf("statuses = %v; want %v", heads, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSetCookieOnZeroResponse(t *testing.T) {
	var r Response
	if v, ok := r.SetCookie("a"); ok || v != nil {
		t.Fatalf("SetCookie on a zero Response = %q, %t", v, ok)
	}
}

// respOutcome is what ParseResponse said about some bytes, in comparable form.
type respOutcome struct {
	err    error
	status int
	proto  string
	len    int
	fields string
}

func respOutcomeOf(r Response, err error) respOutcome {
	return respOutcome{err: err, status: r.Status, proto: string(r.Proto), len: r.Len, fields: string(r.fields)}
}

// probeSetCookies are the names checkResponseInvariants asks every complete head for.
var probeSetCookies = []string{"sessionid", "sid", "a", "=", ";", " ", "\"", "Path"}

// checkResponseInvariants checks what must hold for any b, whatever ParseResponse decides;
// the table and the fuzz target share it.
func checkResponseInvariants(t testing.TB, b []byte) {
	t.Helper()
	r, err := ParseResponse(b)
	got := respOutcomeOf(r, err)
	switch err {
	case nil:
		if r.Status < 100 || r.Status > 999 || len(r.Proto) != len("HTTP/1.1") || r.Len < len("HTTP/1.1 200\n\n") || r.Len > len(b) {
			t.Fatalf("ParseResponse(%q) = %+v", b, got)
		}
		if end := b[:r.Len]; !bytes.HasSuffix(end, []byte("\n\n")) && !bytes.HasSuffix(end, []byte("\n\r\n")) {
			t.Fatalf("ParseResponse(%q): head %q does not end with an empty line", b, end)
		}
	case ErrNeedMore, ErrMalformed:
		if got != (respOutcome{err: err}) {
			t.Fatalf("ParseResponse(%q): %v with a non-zero Response %+v", b, err, got)
		}
	default:
		t.Fatalf("ParseResponse(%q): unexpected error %v", b, err)
	}
	if len(b) == 0 && err != ErrNeedMore {
		t.Fatalf("ParseResponse(empty) = %+v; want ErrNeedMore", got)
	}
	for _, s := range [][]byte{r.Proto, r.fields} {
		if !inside(b, s) {
			t.Fatalf("ParseResponse(%q): slice %q is not inside the input", b, s)
		}
	}
	for _, name := range probeSetCookies {
		if v, ok := r.SetCookie(name); !inside(b, v) || (!ok && v != nil) {
			t.Fatalf("ParseResponse(%q).SetCookie(%q) = %q, %t: not a view into the input", b, name, v, ok)
		}
	}

	if err == nil {
		if again := respOutcomeOf(ParseResponse(b[:r.Len])); again != got {
			t.Fatalf("ParseResponse(%q) = %+v but on b[:Len] %+v", b, got, again)
		}
		more := append(bytes.Clone(b), "\x00garbage\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"...)
		if again := respOutcomeOf(ParseResponse(more)); again != got {
			t.Fatalf("ParseResponse(%q) = %+v but with bytes appended %+v", b, got, again)
		}
	}

	// A decision on a prefix must hold for the whole input, and a parser fed the growing
	// prefixes must agree with parsing each from scratch.
	step := 1
	if len(b) > 2048 {
		step = len(b) / 512
	}
	var p ResponseParser
	for i := 0; i <= len(b); i += step {
		pre := respOutcomeOf(ParseResponse(b[:i]))
		if inc := respOutcomeOf(p.Parse(b[:i])); inc != pre {
			t.Fatalf("resumed parse of %q = %+v; ParseResponse = %+v", b[:i], inc, pre)
		}
		if pre.err == ErrNeedMore {
			continue
		}
		if pre != got {
			t.Fatalf("ParseResponse(%q) = %+v but its prefix %q gives %+v", b, got, b[:i], pre)
		}
		if err == nil && i < r.Len {
			t.Fatalf("prefix %q of a %d-byte head gives %+v; want ErrNeedMore", b[:i], r.Len, pre)
		}
		break
	}
	if inc := respOutcomeOf(p.Parse(b)); inc != got {
		t.Fatalf("resumed parse of %q = %+v; ParseResponse = %+v", b, inc, got)
	}
}

func TestResponseInvariantsOnBigHeads(t *testing.T) {
	big := strings.Replace(appResponse, "\r\n\r\n", "\r\nX-Pad: "+strings.Repeat("p", 5000)+"\r\n\r\n", 1)
	for _, in := range []string{big, big[:len(big)-20], strings.Repeat("HTTP/1.1 200 OK\r\n", 300)} {
		checkResponseInvariants(t, []byte(in))
	}
	if _, err := ParseResponse([]byte(big)); err != nil {
		t.Fatalf("ParseResponse(big head) = %v", err)
	}
}

// responseSplitInputs are heads and non-heads that the split tests feed a ResponseParser
// piece by piece.
var responseSplitInputs = []string{
	appResponse,
	appResponseHead + appResponseHead,
	strings.Replace(appResponse, "\r\n\r\n", "\r\nX-Pad: "+strings.Repeat("p", 5000)+"\r\n\r\n", 1),
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
	"HTTP/1.0 302 Found\nLocation: /\n\nbody",
	"HTTP/1.1 204\r\n\r\n",
	"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
	"HTTP/1.1 2000 OK\r\n\r\n",
	"HTTP/2 200\r\n\r\n",
	"<html><body>",
	"HTTP/1.1 200 OK\r\nA: b\r\n", // never decided
}

// feedResponse gives p b[:cut] for each cut in turn, checking that every answer after the
// first decision repeats it and that p resumes from the end of the last b, and returns the
// last answer.
func feedResponse(t *testing.T, p *ResponseParser, b []byte, cuts []int) respOutcome {
	t.Helper()
	var first *respOutcome
	var last respOutcome
	for _, cut := range cuts {
		last = respOutcomeOf(p.Parse(b[:cut]))
		switch {
		case first != nil:
			if last != *first {
				t.Fatalf("ResponseParser on %q changed its decision %+v to %+v", b[:cut], *first, last)
			}
		case last.err != ErrNeedMore:
			first = &last
		case p.seen != cut:
			t.Fatalf("ResponseParser on %d bytes of %q will rescan from %d", cut, b, p.seen)
		}
	}
	return last
}

func TestResponseParserSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, in := range responseSplitInputs {
		b := []byte(in)
		want := respOutcomeOf(ParseResponse(b))

		var bytewise []int
		for i := range len(b) + 1 {
			bytewise = append(bytewise, i)
		}
		var p ResponseParser
		if got := feedResponse(t, &p, b, bytewise); got != want {
			t.Fatalf("ResponseParser fed %q byte by byte = %+v; ParseResponse = %+v", b, got, want)
		}

		for range 50 {
			var cuts []int
			for cut := 0; cut < len(b); {
				cut = min(len(b), cut+1+rng.IntN(64))
				cuts = append(cuts, cut)
			}
			p = ResponseParser{}
			if got := feedResponse(t, &p, b, cuts); got != want {
				t.Fatalf("ResponseParser fed %q in pieces ending at %v = %+v; ParseResponse = %+v", b, cuts, got, want)
			}
		}
	}
}

// TestResponseDecisionsNeverChange checks that once ParseResponse decides on a prefix, every
// longer input gets the same answer, from ParseResponse and from a parser that saw the prefix.
func TestResponseDecisionsNeverChange(t *testing.T) {
	tails := []string{"", "\r\n\r\n", "\x00garbage", "HTTP/1.1 200 OK\r\n\r\n", "\n\n"}
	for _, in := range responseSplitInputs {
		b := []byte(in)
		for i := range len(b) + 1 {
			pre := respOutcomeOf(ParseResponse(b[:i]))
			if pre.err == ErrNeedMore {
				continue
			}
			for _, tail := range tails {
				longer := append(b[:i:i], tail...)
				var p ResponseParser
				p.Parse(longer[:i])
				if got := respOutcomeOf(p.Parse(longer)); got != pre {
					t.Fatalf("ResponseParser decided %+v on %q but says %+v on %q", pre, b[:i], got, longer)
				}
				if got := respOutcomeOf(ParseResponse(longer)); got != pre {
					t.Fatalf("ParseResponse decided %+v on %q but says %+v on %q", pre, b[:i], got, longer)
				}
			}
			break
		}
	}
}

const stickyField = "Set-Cookie: lb_srv=backend-2; Path=/; HttpOnly; SameSite=Lax"

func TestAppendWithField(t *testing.T) {
	tests := []struct {
		name, head, want string
	}{
		{
			name: "crlf",
			head: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
			want: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + stickyField + "\r\n\r\n",
		},
		{
			name: "lf",
			head: "HTTP/1.1 200 OK\nContent-Length: 2\n\n",
			want: "HTTP/1.1 200 OK\nContent-Length: 2\n" + stickyField + "\n\n",
		},
		{
			name: "no-fields",
			head: "HTTP/1.1 204 No Content\r\n\r\n",
			want: "HTTP/1.1 204 No Content\r\n" + stickyField + "\r\n\r\n",
		},
		{
			// The final empty line decides: it is what the peer sees last.
			name: "lf-lines-crlf-end",
			head: "HTTP/1.1 200 OK\nA: b\n\r\n",
			want: "HTTP/1.1 200 OK\nA: b\n" + stickyField + "\r\n\r\n",
		},
		{
			name: "crlf-lines-lf-end",
			head: "HTTP/1.1 200 OK\r\nA: b\r\n\n",
			want: "HTTP/1.1 200 OK\r\nA: b\r\n" + stickyField + "\n\n",
		},
		{
			name: "request-head",
			head: "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
			want: "GET / HTTP/1.1\r\nHost: h\r\n" + stickyField + "\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendWithField([]byte("prefix:"), []byte(tt.head), []byte(stickyField))
			if string(got) != "prefix:"+tt.want {
				t.Fatalf("AppendWithField = %q; want %q", got, "prefix:"+tt.want)
			}
		})
	}
}

func TestAppendWithFieldAppResponse(t *testing.T) {
	b := []byte(appResponse)
	r, err := ParseResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	out := AppendWithField(nil, b[:r.Len], []byte(stickyField))
	out = append(out, b[r.Len:]...)
	checkAppended(t, b, r, out, stickyField)
	r2, _ := ParseResponse(out)
	if v, ok := r2.SetCookie("lb_srv"); !ok || string(v) != "backend-2" {
		t.Errorf("SetCookie(lb_srv) on the result = %q, %t", v, ok)
	}
	if v, ok := r2.SetCookie("sessionid"); !ok || string(v) != "9f8e7d6c5b4a39281706f5e4d3c2b1a0" {
		t.Errorf("SetCookie(sessionid) on the result = %q, %t", v, ok)
	}
}

func TestAppendWithFieldPanicsOnIncompleteHead(t *testing.T) {
	for _, head := range []string{"", "\n", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\n\r\nbody", "HTTP/1.1 200 OK\r\n\r"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AppendWithField(%q) did not panic", head)
				}
			}()
			AppendWithField(nil, []byte(head), []byte(stickyField))
		}()
	}
}

// checkAppended checks out, which is AppendWithField(nil, b[:r.Len], field) followed by the
// rest of b: it must parse as the same head with field as one more, last, header line, and
// the bytes after the head must be unchanged.
func checkAppended(t testing.TB, b []byte, r Response, out []byte, field string) {
	t.Helper()
	r2, err := ParseResponse(out)
	if err != nil {
		t.Fatalf("head %q with %q: ParseResponse(%q) = %v", b[:r.Len], field, out, err)
	}
	eol := "\n"
	if bytes.HasSuffix(b[:r.Len], []byte("\r\n\r\n")) || bytes.HasSuffix(b[:r.Len], []byte("\n\r\n")) {
		eol = "\r\n"
	}
	if r2.Status != r.Status || string(r2.Proto) != string(r.Proto) ||
		string(r2.fields) != string(r.fields)+field+eol || r2.Len != r.Len+len(field)+len(eol) {
		t.Fatalf("head %q with %q: got %+v; want %+v plus the field", b[:r.Len], field, respOutcomeOf(r2, nil), respOutcomeOf(r, nil))
	}
	if kept := r.Len - len(eol); string(out[:kept]) != string(b[:kept]) || string(out[kept:kept+len(field)]) != field {
		t.Fatalf("head %q with %q: the original lines changed or the field is not last: %q", b[:r.Len], field, out[:r2.Len])
	}
	if string(out[r2.Len:]) != string(b[r.Len:]) {
		t.Fatalf("head %q with %q: the bytes after the head changed: %q; want %q", b[:r.Len], field, out[r2.Len:], b[r.Len:])
	}
}
