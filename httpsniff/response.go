package httpsniff

import "bytes"

// Response is a parsed HTTP/1.x response head. Its byte slices are views into the caller's
// buffer and are valid only while it is; nothing is copied.
//
// A connection may carry several heads before the final one: any number of interim 1xx
// responses (Interim), each a bare head without a body, then the final response. The next
// head, if any, starts at Len.
type Response struct {
	Status int    // the status code, 100 to 999
	Proto  []byte // "HTTP/1.0" or "HTTP/1.1" (any "HTTP/1.x")
	Len    int    // bytes of the head including the final empty line

	// fields is the validated header block, so that SetCookie can rescan it without a map.
	fields []byte
}

// Interim reports whether r is a 1xx informational response other than 101 Switching
// Protocols (100 Continue, 103 Early Hints, ...): another head follows it on the connection,
// and that one answers the request. A 101 is final: the bytes after it speak another
// protocol.
func (r *Response) Interim() bool {
	return r.Status >= 100 && r.Status < 200 && r.Status != 101
}

// SetCookie returns the value that the first Set-Cookie header setting cookie name gives
// it: its cookie-pair is what comes before the first ';' (RFC 6265 §5.2), the attributes
// after it are ignored. Whitespace around the name and value is ignored and a quoted value is returned
// without its quotes, as Head.Cookie does. Cookie names are case-sensitive, header names are
// not; a Set-Cookie without '=' in its pair is skipped. An empty value (a cookie being
// deleted) is returned as found, with ok true. The value is a view into the buffer.
func (r *Response) SetCookie(name string) ([]byte, bool) {
	if name == "" {
		return nil, false
	}
	for rest := r.fields; ; {
		value, more, ok := nextHeader(rest, "set-cookie")
		if !ok {
			return nil, false
		}
		if i := bytes.IndexByte(value, ';'); i >= 0 {
			value = value[:i]
		}
		if v, ok := findCookie(value, name); ok {
			return v, true
		}
		rest = more
	}
}

// ParseResponse parses b as the start of what a backend sends on a connection. It returns
// the Response when b holds a complete response head (b may go on past it: a body, the next
// head); ErrNeedMore while more bytes are needed; ErrMalformed as soon as the bytes cannot
// be a valid head: a status line other than "HTTP/1.x NNN[ reason]" with single spaces and
// a status from 100 to 999, a bad header line, obsolete line folding, a bare CR. Lines may
// end in CRLF or a bare LF. On error the Response is zero. It does not allocate.
func ParseResponse(b []byte) (Response, error) {
	var p ResponseParser
	return p.Parse(b)
}

// ResponseParser is ParseResponse made resumable, as Parser is for Parse: call Parse with
// all of the growing buffer after each read, and it goes on from the first line it has not
// finished. The same contract holds: each b extends the b of every earlier call, in the same
// array; the zero value is ready; reset it with *p = ResponseParser{}, and do so for the head
// after an Interim one, parsing from where that one ended (b[Len:] of it). A ResponseParser
// is not safe for concurrent use and does not allocate.
type ResponseParser struct {
	resp Response
	lineScan
}

// Parse returns what the function ParseResponse(b) returns. Once it has returned anything
// but ErrNeedMore, p no longer changes: calling it again, with b or a longer b, gives the
// same answer.
func (p *ResponseParser) Parse(b []byte) (Response, error) {
	if p.line == 0 {
		if !statusPrefixOK(b) {
			return Response{}, ErrMalformed
		}
		lf := p.nextLF(b)
		if lf < 0 {
			return Response{}, ErrNeedMore
		}
		if !p.resp.setStatusLine(trimCR(b[:lf])) {
			return Response{}, ErrMalformed
		}
		p.startFields(lf)
	}
	for {
		line, _, n, err := p.nextField(b)
		switch {
		case err != nil:
			return Response{}, err
		case line == nil:
			r := p.resp
			r.Len, r.fields = n, b[p.fields:p.line]
			return r, nil
		}
	}
}

// statusLen is the length of "HTTP/1.1 200", the part of a status line every response has.
const statusLen = len("HTTP/1.1 200")

// statusPrefixOK reports whether b can begin a status line, looking only at the bytes of
// "HTTP/1.x NNN" and the one after it that are there. So a backend that does not speak
// HTTP/1.x is ruled out on its first bytes, and checking again on each read stays cheap.
func statusPrefixOK(b []byte) bool {
	for i, c := range b[:min(len(b), statusLen+1)] {
		var ok bool
		switch {
		case i < len("HTTP/1."):
			ok = c == "HTTP/1."[i]
		case i == len("HTTP/1.") || i > len("HTTP/1.1 ") && i < statusLen:
			ok = c >= '0' && c <= '9'
		case i == len("HTTP/1.1"):
			ok = c == ' '
		case i == len("HTTP/1.1 "):
			ok = c >= '1' && c <= '9' // no status class 0
		default: // after the status: the reason phrase or the line end
			ok = c == ' ' || c == '\r' || c == '\n'
		}
		if !ok {
			return false
		}
	}
	return true
}

// setStatusLine checks a status line (without its line end) whose first bytes
// statusPrefixOK accepted: RFC 9112 §4 asks for a space before the reason phrase, but
// servers that send none are common, so "HTTP/1.1 200" passes too. The reason phrase may
// hold what a header value may.
func (r *Response) setStatusLine(line []byte) bool {
	if len(line) < statusLen || len(line) > statusLen && line[statusLen] != ' ' {
		return false
	}
	for _, c := range line[statusLen:] {
		if !fieldByte[c] {
			return false
		}
	}
	s := line[len("HTTP/1.1 "):statusLen]
	r.Status = int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0')
	r.Proto = line[:len("HTTP/1.1")]
	return true
}

// AppendWithField appends head to dst with one more header line, field, inserted just
// before the empty line that ends the head, and returns the extended slice; the body and
// later heads are the caller's to copy. The new line ends the way the head's final empty
// line does (CRLF, or a bare LF), so both ends of the connection keep seeing one style.
//
// head must be a complete head and nothing more, such as b[:r.Len] of a parsed Response or
// b[:h.Len] of a Head; AppendWithField panics if it does not end with an empty line. field
// is the line without its line end, "Name: value", and is not checked: it must be a valid
// header line, free of CR and LF, or the result is not a valid head. It does not allocate
// when dst has room for len(head)+len(field)+2 more bytes.
func AppendWithField(dst, head []byte, field []byte) []byte {
	n := len(head)
	var eol int // length of the line end of the final empty line
	switch {
	case n >= 3 && string(head[n-3:]) == "\n\r\n":
		eol = 2
	case n >= 2 && string(head[n-2:]) == "\n\n":
		eol = 1
	default:
		panic("httpsniff: AppendWithField: head does not end with an empty line")
	}
	dst = append(dst, head[:n-eol]...)
	dst = append(dst, field...)
	dst = append(dst, head[n-eol:]...)
	return append(dst, head[n-eol:]...)
}
