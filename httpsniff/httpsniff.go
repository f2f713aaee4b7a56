// Package httpsniff parses and classifies the first bytes of a connection: it tells whether the
// client speaks HTTP/1.x (or HTTP/2 with prior knowledge, or TLS, or something else) and where
// its request head ends, so that a layer-4 balancer can route on the Host header and cookies;
// of a TLS client it reads the ClientHello's server name and ALPN (ParseClientHello).
// On the way back it parses the backend's response heads (ParseResponse), reads the cookies
// they set, and inserts a header line into one (AppendWithField).
//
// It does no I/O: the caller owns reading the socket into its buffer, bounding it in size and
// time, and replaying every byte it read to the other end. It parses in place, in the
// caller's buffer, and does not allocate.
//
// A decision, once taken on a prefix of the bytes, holds for every longer input: bytes that
// arrive later can complete a head but never change what the earlier bytes said. That is what
// lets the caller stop reading at the first decision, and what lets Parser resume where it
// stopped instead of starting over on each read.
package httpsniff

import (
	"bytes"
	"errors"
	"strconv"
)

// Kind classifies the first bytes of a connection.
type Kind uint8

// The kinds of connection Parse tells apart, plus KindEmpty for the caller's use.
const (
	KindUnknown Kind = iota // nothing recognised (or not decided yet)
	KindEmpty               // no byte arrived before the deadline / EOF; never returned by Parse
	KindHTTP1               // a complete, well-formed HTTP/1.x request head
	KindHTTP2               // HTTP/2 prior-knowledge preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	KindTLS                 // a TLS record header of a handshake (0x16 0x03 0x00..0x04)
	KindOther               // bytes that cannot start an HTTP/1.x request
)

var kindNames = [...]string{"unknown", "empty", "http1", "http2", "tls", "other"}

// String returns the lower-case name of k, as it appears in logs.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Decisions are sentinel errors, to be tested with errors.Is.
var (
	// ErrNeedMore is returned by Parse and ParseResponse while the bytes are a proper prefix
	// of something undecided: more bytes may complete the head or rule out HTTP/1.x.
	ErrNeedMore = errors.New("httpsniff: head is not complete yet")
	// ErrHeadTooLarge is for the caller to return when its buffer filled while Parse (or
	// ParseResponse) still said ErrNeedMore; a bigger buffer (lb's --max-header-bytes) lets
	// such heads be parsed. The parsers never return it: they cannot know how big the buffer
	// may grow.
	ErrHeadTooLarge = errors.New("httpsniff: head does not fit the sniff buffer")
	// ErrMalformed means the bytes began like an HTTP/1.x request line but are not a valid
	// request head, for which an HTTP server would answer 400; or, from ParseResponse, that
	// they are not a valid response head.
	ErrMalformed = errors.New("httpsniff: malformed HTTP/1.x head")
)

// Head is a parsed request head. Its byte slices are views into the caller's buffer and are
// valid only while it is; nothing is copied.
type Head struct {
	Kind                        Kind
	Method, Target, Proto, Host []byte // Host: value of the first Host header, trimmed; nil if none
	Len                         int    // bytes of the head including the final empty line; 0 unless Kind == KindHTTP1

	// fields is the validated header block (every line after the request line, up to the
	// final empty line), so that Cookie can rescan it without a map.
	fields []byte
}

// Cookie returns the value of the first cookie called name in any Cookie header, looking at
// every Cookie header in order and at every cookie in each, the way browsers send them
// (RFC 6265 §5.4): "a=1; b=2". Whitespace around names and values is ignored and a quoted
// value is returned without its quotes. Cookie names are case-sensitive, header names are
// not. A pair without '=' has no name and is skipped. The value is a view into the buffer.
func (h *Head) Cookie(name string) ([]byte, bool) {
	if name == "" {
		return nil, false
	}
	for rest := h.fields; ; {
		list, more, ok := nextHeader(rest, "cookie")
		if !ok {
			return nil, false
		}
		if v, ok := findCookie(list, name); ok {
			return v, true
		}
		rest = more
	}
}

// nextHeader finds the next header line called lowerName (lower-case) in fields, a header
// block that Parse or ParseResponse validated, and returns its value, untrimmed and without
// its line end, and the lines after it.
func nextHeader(fields []byte, lowerName string) (value, rest []byte, ok bool) {
	for len(fields) > 0 {
		var line []byte
		if i := bytes.IndexByte(fields, '\n'); i >= 0 {
			line, fields = fields[:i], fields[i+1:]
		} else {
			line, fields = fields, nil
		}
		// Every line was validated: each has a colon and no space before it.
		colon := bytes.IndexByte(line, ':')
		if colon == len(lowerName) && equalFoldLower(line[:colon], lowerName) {
			return trimCR(line[colon+1:]), fields, true
		}
	}
	return nil, nil, false
}

// findCookie looks for name in one Cookie header value.
func findCookie(list []byte, name string) ([]byte, bool) {
	for len(list) > 0 {
		var pair []byte
		if i := bytes.IndexByte(list, ';'); i >= 0 {
			pair, list = list[:i], list[i+1:]
		} else {
			pair, list = list, nil
		}
		eq := bytes.IndexByte(pair, '=')
		if eq < 0 || string(trimOWS(pair[:eq])) != name {
			continue
		}
		v := trimOWS(pair[eq+1:])
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return nil, false
}

// Parse parses b as the start of a connection. It returns a Head of Kind KindHTTP1 when b holds
// a complete request head (b may go on past it: a body, pipelined requests); a Head of Kind
// KindHTTP2, KindTLS or KindOther as soon as the first bytes rule out HTTP/1.x; ErrNeedMore
// while more bytes are needed (an empty b, a prefix of the HTTP/2 preface, an unfinished
// head); ErrMalformed when b started like an HTTP/1.x request line but is broken. Lines may
// end in CRLF or a bare LF. On error the Head is zero.
func Parse(b []byte) (Head, error) {
	var p Parser
	return p.Parse(b)
}

// StartsLikeHTTP1 reports whether b begins as an HTTP/1.x request does, with a method and a
// space: true for every complete request head, and for a partial, oversized or malformed one
// whose client still speaks HTTP (lb answers it 503 when no backend is up).
func StartsLikeHTTP1(b []byte) bool {
	_, k, _ := sniffStart(b)
	return k == KindHTTP1
}

// maxMethod bounds the method so that a stream with no space early on is ruled out at once
// (the longest registered methods, e.g. UPDATEREDIRECTREF, are 17; none is in real use).
const maxMethod = 16

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Parser is Parse made resumable for a buffer that grows as bytes arrive: the caller reads
// into one buffer and calls Parse with all of it after each read, and the Parser goes on from
// the first line it has not finished, so a head trickling in byte by byte costs linear time,
// not quadratic.
//
// The b of each call must extend the b of every earlier call on the same Parser, in the same
// array: same start, same earlier bytes, at least as long (compacting or reallocating the
// buffer mid-head breaks this; start over with a new Parser then). The zero value is ready to
// use; reset it for a new connection with *p = Parser{}. A Parser is not safe for concurrent
// use and does not allocate.
type Parser struct {
	head Head
	lineScan
}

// lineScan is where a resumable parser stands in a head; Parser and ResponseParser share it.
type lineScan struct {
	fields int // offset of the first header line, once the start line is parsed
	line   int // offset of the first line not parsed yet; 0 while in the start line
	seen   int // offset up to which the current line is known to have no '\n'
}

// Parse returns what the function Parse(b) returns. Once it has returned anything but
// ErrNeedMore, p no longer changes: calling it again, with b or a longer b, gives the same
// answer.
func (p *Parser) Parse(b []byte) (Head, error) {
	if p.line == 0 {
		method, k, err := sniffStart(b)
		if k != KindHTTP1 {
			return Head{Kind: k}, err
		}
		lf := p.nextLF(b)
		if lf < 0 {
			return Head{}, ErrNeedMore
		}
		if !p.head.setRequestLine(trimCR(b[:lf]), method) {
			return Head{}, ErrMalformed
		}
		p.startFields(lf)
	}
	for {
		line, colon, n, err := p.nextField(b)
		switch {
		case err != nil:
			return Head{}, err
		case line == nil:
			h := p.head
			h.Kind, h.Len, h.fields = KindHTTP1, n, b[p.fields:p.line]
			return h, nil
		}
		if p.head.Host == nil && colon == len("host") && equalFoldLower(line[:colon], "host") {
			p.head.Host = trimOWS(line[colon+1:]) // never nil: a slice of the buffer
		}
	}
}

// nextLF returns the offset in b of the '\n' that ends the current line, or -1, remembering
// how far it looked.
func (s *lineScan) nextLF(b []byte) int {
	if i := bytes.IndexByte(b[s.seen:], '\n'); i >= 0 {
		return s.seen + i
	}
	s.seen = len(b)
	return -1
}

// startFields records that the start line ended with the '\n' at lf.
func (s *lineScan) startFields(lf int) {
	s.fields, s.line, s.seen = lf+1, lf+1, lf+1
}

// nextField checks the next header line of b and returns it, without its line end, with the
// offset of its colon, and moves past it. At the empty line that ends the head it returns a
// nil line and the length of the head, and stays there, so that s.line is where the header
// block ends. Otherwise it returns ErrNeedMore or, without moving, ErrMalformed.
func (s *lineScan) nextField(b []byte) (line []byte, colon, headLen int, err error) {
	lf := s.nextLF(b)
	if lf < 0 {
		return nil, 0, 0, ErrNeedMore
	}
	line = trimCR(b[s.line:lf])
	if len(line) == 0 {
		return nil, 0, lf + 1, nil
	}
	colon, ok := checkField(line)
	if !ok {
		return nil, 0, 0, ErrMalformed
	}
	s.line, s.seen = lf+1, lf+1
	return line, colon, 0, nil
}

// sniffStart decides on the first bytes alone, before any line has ended. It returns
// KindHTTP1 and the length of the method when b starts with a method and a space: from then
// on only the rest of the head can say more. Every check looks at a bounded prefix, so
// calling it again on each read stays cheap.
func sniffStart(b []byte) (method int, k Kind, err error) {
	if len(b) == 0 {
		return 0, KindUnknown, ErrNeedMore
	}
	if b[0] == 0x16 { // TLS record type handshake
		switch {
		case len(b) >= 2 && b[1] != 3:
			return 0, KindOther, nil
		case len(b) < 3:
			return 0, KindUnknown, ErrNeedMore
		case b[2] <= 4: // SSL 3.0 to TLS 1.3; ClientHellos say 1.0 to 1.2 here
			return 0, KindTLS, nil
		}
		return 0, KindOther, nil
	}
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if n == len(h2Preface) {
			return 0, KindHTTP2, nil
		}
		return 0, KindUnknown, ErrNeedMore
	}
	// Real methods are upper-case; anything else ends here, e.g. an SSH or SMTP banner.
	if b[0] < 'A' || b[0] > 'Z' {
		return 0, KindOther, nil
	}
	for i := 1; i < len(b); i++ {
		switch {
		case b[i] == ' ':
			return i, KindHTTP1, nil
		case i == maxMethod || !tchar[b[i]]:
			return 0, KindOther, nil
		}
	}
	return 0, KindUnknown, ErrNeedMore
}

// setRequestLine checks the request line (without its line end) whose method, of length
// method, sniffStart found. The version must be HTTP/1.x and the parts must be separated by
// single spaces, as RFC 9112 §3 asks and net/http enforces.
func (h *Head) setRequestLine(line []byte, method int) bool {
	rest := line[method+1:]
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return false
	}
	target, proto := rest[:sp], rest[sp+1:]
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	if len(proto) != len("HTTP/1.1") || string(proto[:7]) != "HTTP/1." || proto[7] < '0' || proto[7] > '9' {
		return false
	}
	h.Method, h.Target, h.Proto = line[:method], target, proto
	return true
}

// checkField checks one header line (without its line end) and returns the offset of its
// colon. It rejects what RFC 9112 §5 tells a server to reject: obsolete line folding,
// whitespace before the colon, and control characters (a bare CR among them), all classic
// request-smuggling material.
func checkField(line []byte) (colon int, ok bool) {
	for colon < len(line) && tchar[line[colon]] {
		colon++
	}
	if colon == 0 || colon == len(line) || line[colon] != ':' {
		return 0, false
	}
	for _, c := range line[colon+1:] {
		if !fieldByte[c] {
			return 0, false
		}
	}
	return colon, true
}

func trimCR(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		return line[:n-1]
	}
	return line
}

// trimOWS trims optional whitespace (SP, HTAB). The result of a non-nil b is never nil.
func trimOWS(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	for j > i && (b[j-1] == ' ' || b[j-1] == '\t') {
		j--
	}
	return b[i:j]
}

// equalFoldLower reports whether b equals lower, a word of lower-case ASCII letters only,
// ignoring case.
func equalFoldLower(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		if b[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// tchar holds the token characters of RFC 9110 §5.6.2: methods and header names.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// fieldByte holds the bytes allowed in a header value: visible ASCII, SP, HTAB, and
// obs-text (0x80-0xFF), which real clients do send.
var fieldByte = func() (t [256]bool) {
	t['\t'] = true
	for c := 0x20; c < 0x100; c++ {
		t[c] = c != 0x7f
	}
	return t
}()
