package httpsniff

import "errors"

// ErrBadClientHello is returned by ParseClientHello when the bytes are not a well-formed TLS
// ClientHello: a record that is not a handshake, a handshake that is not a ClientHello, or
// lengths that do not add up. A server would abort such a handshake; a router can still pass
// the connection on as TLS without a server name.
var ErrBadClientHello = errors.New("httpsniff: not a well-formed TLS ClientHello")

// Bounds of what a ClientHello keeps. A DNS name is at most 253 bytes; a longer server name
// is refused (ErrBadClientHello). ALPN lists are a few protocols long ("h2", "http/1.1"):
// the protocols that do not fit in the first maxALPN bytes are dropped.
const (
	maxServerName = 255
	maxALPN       = 128
	maxRecord     = 1<<14 + 2048 // the largest record crypto/tls reads before a version is agreed
)

// TLS numbers (RFC 8446 §4, RFC 6066 §3, RFC 7301, draft-ietf-tls-esni).
const (
	recordHandshake      = 0x16
	handshakeClientHello = 1
	extServerName        = 0
	extALPN              = 16
	extECH               = 0xfe0d
	nameTypeHostName     = 0
)

// ClientHello is what a router needs from a TLS ClientHello: the server name (SNI) and the
// ALPN protocols the client offers. Unlike Head it holds copies, not views: a ClientHello
// may be spread over several TLS records, so its fields need not be contiguous in the
// buffer. It is a plain value of a few hundred bytes and costs no allocation.
type ClientHello struct {
	// ECH is true when the client sent encrypted_client_hello: ServerName is then the outer,
	// public name, which is the one to route on (the inner one is for the backend only).
	ECH bool

	serverName [maxServerName]byte
	nameLen    uint8
	alpn       [maxALPN]byte // the protocol_name_list, each protocol with its length byte
	alpnLen    uint8
}

// ServerName returns the host_name of the server_name extension as the client sent it (not
// lower-cased), or nil when there is none. It is a view into h: valid while h is.
func (h *ClientHello) ServerName() []byte {
	if h.nameLen == 0 {
		return nil
	}
	return h.serverName[:h.nameLen]
}

// HasALPN reports whether the client offers protocol proto (compared exactly, as ALPN
// protocol names are byte strings: "h2", "http/1.1").
func (h *ClientHello) HasALPN(proto string) bool {
	for l := h.alpn[:h.alpnLen]; len(l) > 0; l = l[1+int(l[0]):] {
		if string(l[1:1+int(l[0])]) == proto {
			return true
		}
	}
	return false
}

// ALPN returns the protocols the client offers, in its order of preference. It allocates:
// for logs and tests, not the data path (use HasALPN there).
func (h *ClientHello) ALPN() []string {
	var out []string
	for l := h.alpn[:h.alpnLen]; len(l) > 0; l = l[1+int(l[0]):] {
		out = append(out, string(l[1:1+int(l[0])]))
	}
	return out
}

// ParseClientHello parses b, the first bytes a client sent, as TLS records carrying a
// ClientHello. The handshake message may be split over several records, and the records
// over several reads: while b holds only part of the message (and nothing wrong so far) it
// returns ErrNeedMore, and the caller reads more into the same buffer and calls again with
// all of it; when its buffer is full it gives up as with a head (ErrHeadTooLarge). It returns
// ErrBadClientHello as soon as the bytes cannot be a ClientHello; then, as for every answer
// other than ErrNeedMore, longer input gives the same answer. Bytes after the ClientHello
// are not looked at. It does not allocate and does not modify b.
//
// Every record must be a handshake record of version 3.0 to 3.4, as the sniffer classifies
// TLS (crypto/tls takes any version below 16.0 at first). It checks the structure that leads to the extensions (versions, random, session id,
// cipher suites, compression methods, the extension list) and the server_name and ALPN
// extensions the way crypto/tls does (one host_name, no trailing dot, non-empty protocols,
// no duplicate of either extension); it does not judge the other extensions.
func ParseClientHello(b []byte) (ClientHello, error) {
	var p ClientHelloParser
	return p.Parse(b)
}

// ClientHelloParser is ParseClientHello made resumable for a buffer that grows as bytes
// arrive, as Parser is for heads: while the ClientHello is incomplete it remembers the
// records it has walked, so a hello trickling in one tiny record at a time costs linear
// time, not quadratic. The b of each call must extend the b of the calls before (same
// array, same earlier bytes). The zero value is ready; reset it with *p =
// ClientHelloParser{}. It does not allocate.
type ClientHelloParser struct {
	pos   int // the next record header not walked yet
	got   int // bytes of the handshake header in hdr
	seen  int // handshake bytes in the records walked
	total int // the handshake message's length with its header; 0 until known
	hdr   [4]byte
}

// Parse returns what ParseClientHello(b) returns.
func (p *ClientHelloParser) Parse(b []byte) (ClientHello, error) {
	var h ClientHello
	total, err := p.messageLen(b)
	if err != nil {
		return h, err
	}
	r := hsReader{b: b}
	r.skip(4) // msg_type and length, checked by messageLen
	if !h.parseBody(&r, total) {
		return ClientHello{}, ErrBadClientHello
	}
	return h, nil
}

// messageLen walks the record headers of b from where the last call stopped and returns
// the length of the handshake message they carry (its 4-byte header included) once b holds
// all of it.
func (p *ClientHelloParser) messageLen(b []byte) (int, error) {
	for {
		rest := b[p.pos:]
		switch {
		case len(rest) == 0:
			return 0, ErrNeedMore
		case rest[0] != recordHandshake, len(rest) > 1 && rest[1] != 3, len(rest) > 2 && rest[2] > 4:
			return 0, ErrBadClientHello
		case len(rest) < 5:
			return 0, ErrNeedMore
		}
		n := int(rest[3])<<8 | int(rest[4])
		if n == 0 || n > maxRecord { // RFC 8446 §5.1: no empty handshake fragments
			return 0, ErrBadClientHello
		}
		frag := rest[5:min(len(rest), 5+n)]
		got := p.got
		for i := 0; got < len(p.hdr) && i < len(frag); i++ {
			p.hdr[got] = frag[i]
			got++
		}
		if got > 0 && p.hdr[0] != handshakeClientHello {
			return 0, ErrBadClientHello
		}
		total := p.total
		if got == len(p.hdr) && total == 0 {
			total = 4 + (int(p.hdr[1])<<16 | int(p.hdr[2])<<8 | int(p.hdr[3]))
		}
		if total > 0 && p.seen+len(frag) >= total {
			return total, nil
		}
		if len(frag) < n {
			return 0, ErrNeedMore // this record again on the next call
		}
		p.pos, p.got, p.seen, p.total = p.pos+5+n, got, p.seen+n, total
	}
}

// hsReader reads the handshake message out of its records, skipping the record headers.
// messageLen has checked every record header up to the end of the message, and the
// parser never reads past that end, so it needs no bounds checks of its own.
type hsReader struct {
	b    []byte
	pos  int // next byte of b
	left int // bytes of the current record from pos on
	off  int // offset in the handshake message
}

func (r *hsReader) next() byte {
	for r.left == 0 {
		r.left = int(r.b[r.pos+3])<<8 | int(r.b[r.pos+4])
		r.pos += 5
	}
	c := r.b[r.pos]
	r.pos++
	r.left--
	r.off++
	return c
}

func (r *hsReader) skip(n int) {
	for n > 0 {
		if r.left == 0 {
			r.next()
			n--
			continue
		}
		k := min(n, r.left)
		r.pos += k
		r.left -= k
		r.off += k
		n -= k
	}
}

func (r *hsReader) copyTo(dst []byte) {
	for i := range dst {
		dst[i] = r.next()
	}
}

// u8, u16 read a number if it ends by end; ok is false otherwise.
func (r *hsReader) u8(end int) (int, bool) {
	if r.off+1 > end {
		return 0, false
	}
	return int(r.next()), true
}

func (r *hsReader) u16(end int) (int, bool) {
	if r.off+2 > end {
		return 0, false
	}
	return int(r.next())<<8 | int(r.next()), true
}

// vec reads a length of size 1 or 2 and returns where the vector it prefixes ends, if it
// ends by end.
func (r *hsReader) vec(size, end int) (int, bool) {
	var n int
	var ok bool
	if size == 1 {
		n, ok = r.u8(end)
	} else {
		n, ok = r.u16(end)
	}
	if !ok || r.off+n > end {
		return 0, false
	}
	return r.off + n, true
}

// parseBody parses the ClientHello body, which ends at offset end of the message.
func (h *ClientHello) parseBody(r *hsReader, end int) bool {
	if r.off+2+32 > end { // legacy_version, random
		return false
	}
	r.skip(2 + 32)
	sid, ok := r.vec(1, end)
	if !ok || sid-r.off > 32 {
		return false
	}
	r.skip(sid - r.off)
	suites, ok := r.vec(2, end)
	if !ok || (suites-r.off)%2 != 0 {
		return false
	}
	r.skip(suites - r.off)
	comp, ok := r.vec(1, end)
	if !ok {
		return false
	}
	r.skip(comp - r.off)
	if r.off == end {
		return true // no extensions at all: allowed before TLS 1.3
	}
	exts, ok := r.vec(2, end)
	if !ok || exts != end {
		return false
	}
	var seenName, seenALPN bool
	for r.off < exts {
		typ, ok1 := r.u16(exts)
		data, ok2 := r.vec(2, exts)
		if !ok1 || !ok2 {
			return false
		}
		switch typ {
		case extServerName:
			if seenName || !h.parseServerName(r, data) {
				return false
			}
			seenName = true
		case extALPN:
			if seenALPN || !h.parseALPN(r, data) {
				return false
			}
			seenALPN = true
		case extECH:
			if h.ECH {
				return false
			}
			h.ECH = true
		}
		r.skip(data - r.off)
	}
	return true
}

// parseServerName reads a server_name extension's data, which ends at end (RFC 6066 §3).
func (h *ClientHello) parseServerName(r *hsReader, end int) bool {
	list, ok := r.vec(2, end)
	if !ok || list != end || list == r.off {
		return false
	}
	for r.off < list {
		typ, ok1 := r.u8(list)
		name, ok2 := r.vec(2, list)
		n := name - r.off
		if !ok1 || !ok2 || n == 0 {
			return false
		}
		if typ != nameTypeHostName {
			r.skip(n)
			continue
		}
		if h.nameLen != 0 || n > maxServerName {
			return false
		}
		r.copyTo(h.serverName[:n])
		h.nameLen = uint8(n)
		if h.serverName[n-1] == '.' {
			return false
		}
	}
	return true
}

// parseALPN reads an application_layer_protocol_negotiation extension's data, which ends
// at end (RFC 7301 §3.1), keeping the protocols that fit in h.alpn.
func (h *ClientHello) parseALPN(r *hsReader, end int) bool {
	list, ok := r.vec(2, end)
	if !ok || list != end || list == r.off {
		return false
	}
	for r.off < list {
		proto, ok := r.vec(1, list)
		n := proto - r.off
		if !ok || n == 0 {
			return false
		}
		if int(h.alpnLen)+1+n > maxALPN {
			r.skip(n)
			continue
		}
		h.alpn[h.alpnLen] = byte(n)
		r.copyTo(h.alpn[int(h.alpnLen)+1 : int(h.alpnLen)+1+n])
		h.alpnLen += uint8(1 + n)
	}
	return true
}
