package serversfile

import (
	"fmt"
	"io"
	"strings"

	"lb/ring"
)

// Discover is a servers-file line that names backends to find in DNS instead of one backend:
//
//	app.ns.svc.cluster.local:8080 discover=a [weight=N]   every A/AAAA address, at this port
//	_http._tcp.app.ns.svc.cluster.local discover=srv      every SRV target: host, port, weight
//
// Name is a lower-case DNS name without a trailing dot. For Mode "a", Port is 1-65535 and
// Weight 1-1000 (each address's); for "srv" both are 0, as the records give them.
type Discover struct {
	Line   int
	Mode   string // "a" or "srv"
	Name   string
	Port   int
	Weight int
}

// File is a parsed servers file: its fixed backends and its discover= lines, in file order.
// It holds at least one of either.
type File struct {
	Backends []ring.Backend
	Discover []Discover
}

// LoadFile reads the servers file at path, discover= lines included; errors as Load's.
func LoadFile(path string) (*File, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseFile(path, f)
}

// ParseFile is Parse that also takes discover= lines. No two discover lines ask for the
// same name (and port).
func ParseFile(name string, r io.Reader) (*File, error) {
	var found []Discover
	backends, err := parse(name, r, &found)
	if err != nil {
		return nil, err
	}
	return &File{Backends: backends, Discover: found}, nil
}

// discoverLine recognises a discover= line (ok) and parses it; reason says what is wrong.
// found is nil where discover= lines are not taken.
func discoverLine(fields []string, line int, found *[]Discover) (d Discover, ok bool, reason string) {
	for _, f := range fields[1:] {
		if mode, isDiscover := strings.CutPrefix(f, "discover="); isDiscover {
			if ok {
				return d, true, "discover given twice: keep one"
			}
			d.Mode, ok = mode, true
		}
	}
	if !ok {
		return d, false, ""
	}
	if found == nil {
		return d, true, "discover= is not taken here: put the line in the servers file given with -f"
	}
	d.Line = line
	switch d.Mode {
	case "a":
		d.Weight = 1
		addr, reason := parseAddr(fields[0])
		if reason != "" {
			return d, true, reason
		}
		host, port, _, _ := splitHostPort(addr)
		if !validHostname(host) || strings.Trim(host, "0123456789.") == "" {
			return d, true, fmt.Sprintf("discover=a needs a host name, not the address %s: write name:port, e.g. app.default.svc.cluster.local:8080", host)
		}
		d.Name, d.Port = strings.TrimSuffix(host, "."), atoi(port)
	case "srv":
		name := strings.ToLower(strings.TrimSuffix(fields[0], "."))
		if !strings.HasPrefix(name, "_") || strings.Contains(name, ":") || !validHostname(name) {
			return d, true, fmt.Sprintf("discover=srv needs an SRV name without a port, e.g. _http._tcp.app.default.svc.cluster.local, not %q", fields[0])
		}
		d.Name = name
	default:
		return d, true, fmt.Sprintf("bad discover=%s: want discover=a (every address of the name) or discover=srv (the name's SRV records)", d.Mode)
	}
	for _, opt := range fields[1:] {
		key, val, _ := strings.Cut(opt, "=")
		switch {
		case key == "discover":
		case key == "weight" && d.Mode == "a":
			w := atoi(val)
			if w < 1 || w > maxWeight {
				return d, true, fmt.Sprintf("bad weight %q: want 1-%d", val, maxWeight)
			}
			d.Weight = w
		case key == "weight":
			return d, true, "weight= does not go with discover=srv: the SRV records give the weights"
		case key == "id":
			return d, true, "id= does not go with discover=: each address found gets an id made from it"
		default:
			return d, true, fmt.Sprintf("unknown option %q: a discover= line takes weight=N (discover=a only)", opt)
		}
	}
	for _, other := range *found {
		if other.Mode == d.Mode && other.Name == d.Name && other.Port == d.Port {
			return d, true, fmt.Sprintf("duplicate discover line (first on line %d)", other.Line)
		}
	}
	return d, true, ""
}

// atoi parses a decimal number of at most 5 digits; anything else is -1.
func atoi(s string) int {
	if len(s) == 0 || len(s) > 5 {
		return -1
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// AddrID is the id of a backend found in DNS at addr (ip:port, as net.JoinHostPort writes
// it): the same as a servers-file line of that address without id= would get (when no other
// address's id collides with it), so sticky cookies name it the same way across restarts and
// re-resolutions. long picks the 16-digit form that collisions call for.
func AddrID(addr string, long bool) string {
	if long {
		return addrID(addr, 8)
	}
	return addrID(addr, 4)
}
