// Package serversfile reads the servers file: the list of backends lb balances over.
//
// One backend per line, as host:port ([v6addr]:port for IPv6) or http://host:port, then
// optional fields: weight=N, id=NAME, proxy=v1|v2 (the PROXY protocol header lb sends),
// check=tcp|http:/PATH (the health check) and maxconn=N. '#' starts a comment; blank lines are ignored.
// Any error stops the whole file, so lb never starts with half a list.
package serversfile

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"lb/ring"
)

// Limits of the optional fields.
const (
	maxWeight  = 1000
	maxIDLen   = 64
	maxMaxConn = 1_000_000
	maxPathLen = 1024
)

// options names the optional fields, for errors.
const options = "weight=N, id=NAME, proxy=v1|v2, check=tcp|http:/PATH or maxconn=N"

// LineError is a mistake in the servers file, at a line (Line 0: the file as a whole). Reason
// says what is wrong and what to write instead.
type LineError struct {
	File   string
	Line   int
	Reason string
}

// Error formats the error as NAME:LINE: reason, or NAME: reason for the whole file, like a
// compiler does, so editors can jump to the line.
func (e *LineError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Reason
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Load reads the servers file at path; see Parse. Errors in the file are *LineError naming
// path; a file that cannot be read gives the os error, wrapped.
func Load(path string) ([]ring.Backend, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(path, f)
}

// open opens the servers file at path for reading, refusing a directory.
func open(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("servers file: %w", err)
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		f.Close()
		return nil, &LineError{File: path, Reason: "is a directory: give the servers file itself, one backend per line"}
	}
	return f, nil
}

// Parse reads a servers file from r; name is used in errors only. On success it returns at
// least one backend, in file order, each with a normalised Addr (lower-case host, canonical
// IP, decimal port), a Weight in 1..1000 and a non-empty ID, with no two sharing an Addr or
// an ID. A backend without id= gets an id made from its Addr (see autoIDs): stable across
// restarts and reorderings, and it does not reveal the address in cookies.
// Mistakes in the file are *LineError, and so is a discover= line: read those with ParseFile.
func Parse(name string, r io.Reader) ([]ring.Backend, error) {
	return parse(name, r, nil)
}

// parse is Parse; with found non-nil it also takes discover= lines, into found.
func parse(name string, r io.Reader, found *[]Discover) ([]ring.Backend, error) {
	var backends []ring.Backend
	var lines []int // of each backend
	lineOfAddr := map[string]int{}
	lineOfID := map[string]int{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if n == 1 {
			line = strings.TrimPrefix(line, "\uFEFF") // editors on Windows add a byte order mark
		}
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if d, ok, reason := discoverLine(fields, n, found); ok {
			if reason != "" {
				return nil, &LineError{File: name, Line: n, Reason: reason}
			}
			*found = append(*found, d)
			continue
		}
		b, reason := parseLine(fields)
		if reason == "" {
			reason = duplicate(b, lineOfAddr, lineOfID)
		}
		if reason != "" {
			return nil, &LineError{File: name, Line: n, Reason: reason}
		}
		lineOfAddr[b.Addr] = n
		if b.ID != "" {
			lineOfID[b.ID] = n
		}
		backends = append(backends, b)
		lines = append(lines, n)
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		return nil, &LineError{File: name, Line: n + 1, Reason: fmt.Sprintf("line too long: keep lines under %d KiB", bufio.MaxScanTokenSize/1024)}
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(backends) == 0 && (found == nil || len(*found) == 0) {
		return nil, &LineError{File: name, Reason: "no backends: add one per line, e.g. 127.0.0.1:8000"}
	}
	if line, reason := autoIDs(backends, lines, lineOfID); reason != "" {
		return nil, &LineError{File: name, Line: line, Reason: reason}
	}
	return backends, nil
}

// autoIDs gives every backend without an id one made from its address: the first 8 hex
// digits of its SHA-256, or 16 digits for the addresses whose 8 digits collide, with each
// other or with an id= of the file. Which ids get longer depends only on the set of
// addresses, not on the order of lines. It returns the line and reason of a collision that
// 16 digits do not resolve.
func autoIDs(backends []ring.Backend, lines []int, lineOfID map[string]int) (int, string) {
	short := make(map[string]int, len(backends)) // automatic 8-digit ids, and how many want each
	for _, b := range backends {
		if b.ID == "" {
			short[addrID(b.Addr, 4)]++
		}
	}
	for i := range backends {
		b := &backends[i]
		if b.ID != "" {
			continue
		}
		b.ID = addrID(b.Addr, 4)
		if _, taken := lineOfID[b.ID]; taken || short[b.ID] > 1 {
			b.ID = addrID(b.Addr, 8)
			if first, taken := lineOfID[b.ID]; taken {
				return lines[i], fmt.Sprintf("the automatic id %q of %s is taken (first on line %d): give this backend an id=", b.ID, b.Addr, first)
			}
		}
		lineOfID[b.ID] = lines[i]
	}
	return 0, ""
}

// addrID is the first n bytes of the SHA-256 of addr, in hex.
func addrID(addr string, n int) string {
	sum := sha256.Sum256([]byte(addr))
	return hex.EncodeToString(sum[:n])
}

func duplicate(b ring.Backend, lineOfAddr, lineOfID map[string]int) string {
	if first, ok := lineOfAddr[b.Addr]; ok {
		return fmt.Sprintf("duplicate backend %s (first on line %d)", b.Addr, first)
	}
	if first, ok := lineOfID[b.ID]; ok {
		return fmt.Sprintf("duplicate id %q (first on line %d)", b.ID, first)
	}
	return ""
}

// parseLine parses the fields of one non-empty line. It returns the reason when it is wrong.
func parseLine(fields []string) (ring.Backend, string) {
	addr, reason := parseAddr(fields[0])
	if reason != "" {
		return ring.Backend{}, reason
	}
	b := ring.Backend{Addr: addr}
	for _, opt := range fields[1:] {
		key, val, ok := strings.Cut(opt, "=")
		switch {
		case ok && key == "weight":
			if b.Weight != 0 {
				return b, "weight given twice: keep one"
			}
			w, err := strconv.Atoi(val)
			if err != nil || w < 1 || w > maxWeight {
				return b, fmt.Sprintf("bad weight %q: want 1-%d", val, maxWeight)
			}
			b.Weight = w
		case ok && key == "id":
			if b.ID != "" {
				return b, "id given twice: keep one"
			}
			if reason := idReason(val); reason != "" {
				return b, reason
			}
			b.ID = val
		case ok && key == "proxy":
			if b.Proxy != "" {
				return b, "proxy given twice: keep one"
			}
			if val != "v1" && val != "v2" {
				return b, fmt.Sprintf("bad proxy %q: want v1 or v2 (the PROXY protocol version the backend accepts)", val)
			}
			b.Proxy = val
		case ok && key == "check":
			if b.Check != "" {
				return b, "check given twice: keep one"
			}
			if reason := checkReason(val); reason != "" {
				return b, reason
			}
			b.Check = val
		case ok && key == "maxconn":
			if b.MaxConn != 0 {
				return b, "maxconn given twice: keep one"
			}
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > maxMaxConn {
				return b, fmt.Sprintf("bad maxconn %q: want 1-%d", val, maxMaxConn)
			}
			b.MaxConn = n
		default:
			return b, fmt.Sprintf("unknown option %q: want %s, one backend per line", opt, options)
		}
	}
	if b.Weight == 0 {
		b.Weight = 1
	}
	return b, ""
}

// checkReason says what is wrong with a check= value, or "" when it is tcp or http:/PATH
// with a path that can go in a request line as it is.
func checkReason(val string) string {
	if val == "tcp" {
		return ""
	}
	path, ok := strings.CutPrefix(val, "http:")
	if ok && ValidPath(path) {
		return ""
	}
	return fmt.Sprintf("bad check %q: want tcp or http:/PATH, e.g. check=http:/health", val)
}

// ValidPath reports whether path can be sent as an HTTP health check's request target:
// it starts with '/', has at most 1024 bytes, and no spaces, control bytes or '#'.
func ValidPath(path string) bool {
	if !strings.HasPrefix(path, "/") || len(path) > maxPathLen {
		return false
	}
	for _, c := range []byte(path) {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// parseAddr parses host:port, [v6addr]:port or http://host[:port][/] and returns it
// normalised as host:port, so that two spellings of one address are caught as duplicates.
func parseAddr(s string) (string, string) {
	hostport, defaultPort := s, ""
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		switch strings.ToLower(scheme) {
		case "http":
		case "https":
			return "", fmt.Sprintf("scheme %q not supported: lb balances TCP and cannot terminate TLS; use host:port to pass TLS through", scheme)
		default:
			return "", fmt.Sprintf("scheme %q not supported: write http://host:port or host:port", scheme)
		}
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			if rest[i:] != "/" {
				return "", fmt.Sprintf("path %q not supported: lb forwards whole connections, not URLs; write http://%s", rest[i:], rest[:i])
			}
			rest = rest[:i]
		}
		hostport, defaultPort = rest, "80"
	}

	host, port, hasPort, reason := splitHostPort(hostport)
	if reason != "" {
		return "", reason
	}
	if host == "" {
		return "", fmt.Sprintf("missing host in %q: write host:port, e.g. 127.0.0.1:8000", s)
	}
	if !hasPort {
		port = defaultPort
	}
	if port == "" {
		return "", fmt.Sprintf("missing port in %q: write host:port, e.g. %s", s, net.JoinHostPort(host, "8000"))
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", fmt.Sprintf("bad port %q: want 1-65535", port)
	}
	return net.JoinHostPort(host, strconv.FormatUint(p, 10)), ""
}

// splitHostPort splits at the port's colon and normalises the host: a canonical IP, or a
// lower-case hostname. The host may be empty; the caller says so with the whole address.
func splitHostPort(hostport string) (host, port string, hasPort bool, reason string) {
	if rest, ok := strings.CutPrefix(hostport, "["); ok {
		inside, after, ok := strings.Cut(rest, "]")
		if !ok {
			return "", "", false, fmt.Sprintf("bad address %q: missing ']' after the IPv6 address", hostport)
		}
		if after != "" && after[0] != ':' {
			return "", "", false, fmt.Sprintf("bad address %q: write [IPv6]:port, e.g. [::1]:8000", hostport)
		}
		ip, err := netip.ParseAddr(inside)
		// Zones are interface names; other bytes would not survive net.SplitHostPort.
		if err != nil || !ip.Is6() || !validZone(ip.Zone()) {
			return "", "", false, fmt.Sprintf("bad IPv6 address %q: write [IPv6]:port, e.g. [::1]:8000", inside)
		}
		if ip.IsUnspecified() {
			return "", "", false, unspecified(inside)
		}
		port, hasPort = strings.CutPrefix(after, ":")
		return ip.String(), port, hasPort, ""
	}

	switch strings.Count(hostport, ":") {
	case 0:
		host = hostport
	case 1:
		host, port, _ = strings.Cut(hostport, ":")
		hasPort = true
	default:
		return "", "", false, fmt.Sprintf("bad address %q: put an IPv6 address in brackets, e.g. [::1]:8000", hostport)
	}
	if host == "" {
		return "", port, hasPort, ""
	}
	if strings.Trim(host, "0123456789") == "" && !hasPort {
		return "", host, true, "" // a lone number is a port without its host
	}
	if strings.Trim(host, "0123456789.") == "" { // looks like IPv4: must be one
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return "", "", false, fmt.Sprintf("bad IPv4 address %q", host)
		}
		if ip.IsUnspecified() {
			return "", "", false, unspecified(host)
		}
		return ip.String(), port, hasPort, ""
	}
	if !validHostname(host) {
		return "", "", false, fmt.Sprintf("bad host %q: want a hostname or an IP address", host)
	}
	return strings.ToLower(host), port, hasPort, ""
}

func unspecified(host string) string {
	return fmt.Sprintf("address %s means any address and cannot be dialled: write the backend's own address", host)
}

// validHostname reports whether h is a DNS name: dot-separated labels of 1-63 letters,
// digits, '-' or '_' (seen in service names), 253 characters at most, one trailing dot allowed.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !isNameByte(c) {
				return false
			}
		}
	}
	return true
}

// idReason says what is wrong with an id= value, or "" when it is a valid id.
func idReason(id string) string {
	if validID(id) {
		return ""
	}
	return fmt.Sprintf("bad id %q: want 1-%d letters, digits, '-', '_' or '.'", id, maxIDLen)
}

func validZone(zone string) bool {
	return zone == "" || validID(zone)
}

// validID reports whether id is 1-64 letters, digits, '-', '_' or '.': safe in a cookie
// value and in logs without quoting.
func validID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if !isNameByte(c) {
			return false
		}
	}
	return true
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
}

// MaxWeight is the largest weight a backend may have, in the file and through the admin API.
const MaxWeight = maxWeight

// ParseLine parses one backend written as a line of the servers file ("host:port weight=2
// id=web-1", no comment) and checks it as Parse checks a line. A backend without id= gets the
// 8-digit id of its address, as in a file where that id collides with no other. The error
// says what is wrong and what to write instead.
func ParseLine(line string) (ring.Backend, error) {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return ring.Backend{}, errors.New("no address: write host:port, e.g. 127.0.0.1:8000")
	}
	b, reason := parseLine(fields)
	if reason != "" {
		return ring.Backend{}, errors.New(reason)
	}
	if b.ID == "" {
		b.ID = addrID(b.Addr, 4)
	}
	return b, nil
}

// NewBackend is the backend of a servers-file line given as its parts: addr as the line's
// first field, and the values of id= and weight= (""/0: not given). Each part is checked by
// the rules and with the messages of Parse, whole: a part that holds a space, a control
// byte or anything else the file would split on is refused, never read as further options.
// So nothing can be set through it that the admin API does not name (proxy=, check=,
// maxconn=). A backend without an id gets the 8-digit id of its address, as in ParseLine.
func NewBackend(addr, id string, weight int) (ring.Backend, error) {
	a, reason := parseAddr(addr)
	if reason != "" {
		return ring.Backend{}, errors.New(reason)
	}
	b := ring.Backend{Addr: a, ID: id, Weight: weight}
	if id != "" {
		if reason := idReason(id); reason != "" {
			return ring.Backend{}, errors.New(reason)
		}
	} else {
		b.ID = addrID(a, 4)
	}
	switch {
	case weight == 0:
		b.Weight = 1
	case weight < 1 || weight > maxWeight:
		return ring.Backend{}, fmt.Errorf("bad weight \"%d\": want 1-%d", weight, maxWeight)
	}
	return b, nil
}
