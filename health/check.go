package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"lb/ring"
)

// StatusRange is the HTTP statuses an HTTP check counts as up, Min to Max inclusive.
type StatusRange struct{ Min, Max int }

// DefaultStatus is 2xx and 3xx: what --health-expect-status defaults to.
var DefaultStatus = StatusRange{200, 399}

// ParseStatusRange reads "200-399" or a single status such as "204": three-digit statuses
// from 100 to 599, the first not above the second.
func ParseStatusRange(s string) (StatusRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, errA := strconv.Atoi(lo)
	b, errB := strconv.Atoi(hi)
	if errA != nil || errB != nil || a < 100 || b > 599 || a > b {
		return StatusRange{}, fmt.Errorf("bad status range %q: want a status or a range from 100 to 599, e.g. 200-399 or 200", s)
	}
	return StatusRange{a, b}, nil
}

// String returns the range as ParseStatusRange reads it.
func (r StatusRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(r.Min)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// ErrStatus is returned (wrapped) by an HTTP check whose status is outside the range.
var ErrStatus = errors.New("unexpected HTTP status")

// checkOf returns the check a backend gets: its own check= if any, else HTTP GET of
// defaultPath when set, else TCP. The path is "" for a TCP check.
func checkOf(b ring.Backend, defaultPath string) (path string) {
	switch {
	case b.Check == "tcp":
		return ""
	case strings.HasPrefix(b.Check, "http:"):
		return b.Check[len("http:"):]
	}
	return defaultPath
}

// proxyLocalV2 is a PROXY protocol v2 header with the LOCAL command: the 12-byte
// signature, version 2 and command LOCAL (0x20), family and protocol unspecified (0x00),
// and no addresses (length 0). A receiver takes the connection as lb's own, not a client's.
var proxyLocalV2 = []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")

// proxyUnknownV1 is the PROXY protocol v1 header for a connection of lb's own: v1 has no
// LOCAL command, and UNKNOWN is its equivalent, which every v1 receiver must accept.
var proxyUnknownV1 = []byte("PROXY UNKNOWN\r\n")

// proxyOf is the PROXY protocol version b takes: its own proxy=, else its pool's (the
// data path decides the same way), "" for none.
func proxyOf(b ring.Backend, poolProxy string) string {
	if b.Proxy != "" {
		return b.Proxy
	}
	return poolProxy
}

// proxyHeader is the header a probe sends first to a backend taking this PROXY version.
func proxyHeader(version string) []byte {
	switch version {
	case "v2":
		return proxyLocalV2
	case "v1":
		return proxyUnknownV1
	}
	return nil
}

// check probes b once: a TCP connect, then the PROXY header of version proxy, if any, then, for an
// HTTP check, GET path with b's address as Host, wanting a status in want. All of it must
// be done within timeout. It returns the HTTP status (0 for TCP) and nil when b is up.
func check(ctx context.Context, b ring.Backend, proxy, path string, want StatusRange, timeout time.Duration, r *net.Resolver) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{Resolver: r}
	c, err := d.DialContext(ctx, "tcp", b.Addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	hdr := proxyHeader(proxy)
	if path == "" {
		if hdr != nil {
			if _, err := c.Write(hdr); err != nil {
				return 0, fmt.Errorf("send PROXY %s header: %w", proxy, err)
			}
		}
		return 0, nil
	}
	req := make([]byte, 0, len(hdr)+len(path)+len(b.Addr)+80)
	req = append(req, hdr...)
	req = append(req, "GET "+path+" HTTP/1.1\r\nHost: "+b.Addr+"\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n"...)
	if _, err := c.Write(req); err != nil {
		return 0, fmt.Errorf("send GET %s: %w", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
	if err != nil {
		return 0, fmt.Errorf("read the answer to GET %s: %w", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode < want.Min || resp.StatusCode > want.Max {
		return resp.StatusCode, fmt.Errorf("%w: GET %s answered %d, want %s", ErrStatus, path, resp.StatusCode, want)
	}
	return resp.StatusCode, nil
}
