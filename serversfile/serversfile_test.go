package serversfile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"lb/ring"
)

func hashID(addr string) string {
	sum := sha256.Sum256([]byte(addr))
	return hex.EncodeToString(sum[:4])
}

// name253 is a hostname of the longest length allowed, 253, in labels of the longest, 63.
var name253 = strings.Repeat("a", 63) + "." + strings.Repeat("z", 63) + "." + strings.Repeat("A", 63) + "." + strings.Repeat("Z", 61)

func TestParseGood(t *testing.T) {
	tests := []struct {
		in   string
		want []ring.Backend
	}{
		{"127.0.0.1:8000", []ring.Backend{{ID: hashID("127.0.0.1:8000"), Addr: "127.0.0.1:8000", Weight: 1}}},
		{"  http://localhost:8000/  # trailing comment\n", []ring.Backend{{ID: hashID("localhost:8000"), Addr: "localhost:8000", Weight: 1}}},
		{"HTTP://Example.COM", []ring.Backend{{ID: hashID("example.com:80"), Addr: "example.com:80", Weight: 1}}},
		{"[::1]:8000 weight=3 id=v6", []ring.Backend{{ID: "v6", Addr: "[::1]:8000", Weight: 3}}},
		{"a:1 id=p proxy=v2 check=http:/health?full=1 maxconn=100", []ring.Backend{{ID: "p", Addr: "a:1", Weight: 1, Proxy: "v2", Check: "http:/health?full=1", MaxConn: 100}}},
		{"a:1 id=q proxy=v1 check=tcp", []ring.Backend{{ID: "q", Addr: "a:1", Weight: 1, Proxy: "v1", Check: "tcp"}}},
		{"[0:0::1]:08000", []ring.Backend{{ID: hashID("[::1]:8000"), Addr: "[::1]:8000", Weight: 1}}},
		{"http://[::1]:8000", []ring.Backend{{ID: hashID("[::1]:8000"), Addr: "[::1]:8000", Weight: 1}}},
		{"db_1.internal:5432\tid=A.b-c_9 weight=1000", []ring.Backend{{ID: "A.b-c_9", Addr: "db_1.internal:5432", Weight: 1000}}},
		// The bounds, inclusive: weight 1, a 64-byte id, 63-byte labels, a 253-byte name, and
		// the letters and digits at both ends of their ranges.
		{"a:1 weight=1 id=" + strings.Repeat("i", 64), []ring.Backend{{ID: strings.Repeat("i", 64), Addr: "a:1", Weight: 1}}},
		{name253 + ":80 id=azAZ09", []ring.Backend{{ID: "azAZ09", Addr: strings.ToLower(name253) + ":80", Weight: 1}}},
		{"\uFEFF# comment\n\n  \r\n10.0.0.1:1\r\n10.0.0.2:65535 # two\n", []ring.Backend{
			{ID: hashID("10.0.0.1:1"), Addr: "10.0.0.1:1", Weight: 1},
			{ID: hashID("10.0.0.2:65535"), Addr: "10.0.0.2:65535", Weight: 1},
		}},
	}
	for _, tt := range tests {
		got, err := Parse("servers.txt", strings.NewReader(tt.in))
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "servers.txt: no backends: add one per line, e.g. 127.0.0.1:8000"},
		{"# only\n\n   # comments\n", "servers.txt: no backends: add one per line, e.g. 127.0.0.1:8000"},
		{"a:1\nb:2\nlocalhost:99999", `servers.txt:3: bad port "99999": want 1-65535`},
		{"localhost:0", `servers.txt:1: bad port "0": want 1-65535`},
		{"localhost:http", `servers.txt:1: bad port "http": want 1-65535`},
		{"localhost", `servers.txt:1: missing port in "localhost": write host:port, e.g. localhost:8000`},
		{"localhost:", `servers.txt:1: missing port in "localhost:": write host:port, e.g. localhost:8000`},
		{"[::1]", `servers.txt:1: missing port in "[::1]": write host:port, e.g. [::1]:8000`},
		{":8000", `servers.txt:1: missing host in ":8000": write host:port, e.g. 127.0.0.1:8000`},
		{"8000", `servers.txt:1: missing host in "8000": write host:port, e.g. 127.0.0.1:8000`},
		{"\nhttps://example.com:443", `servers.txt:2: scheme "https" not supported: lb balances TCP and cannot terminate TLS; use host:port to pass TLS through`},
		{"ftp://example.com:21", `servers.txt:1: scheme "ftp" not supported: write http://host:port or host:port`},
		{"http://example.com:80/api", `servers.txt:1: path "/api" not supported: lb forwards whole connections, not URLs; write http://example.com:80`},
		{"http://example.com:80?x=1", `servers.txt:1: path "?x=1" not supported: lb forwards whole connections, not URLs; write http://example.com:80`},
		{"::1:8000", `servers.txt:1: bad address "::1:8000": put an IPv6 address in brackets, e.g. [::1]:8000`},
		{"[::1:8000", `servers.txt:1: bad address "[::1:8000": missing ']' after the IPv6 address`},
		{"[::1]8000", `servers.txt:1: bad address "[::1]8000": write [IPv6]:port, e.g. [::1]:8000`},
		{"[127.0.0.1]:80", `servers.txt:1: bad IPv6 address "127.0.0.1": write [IPv6]:port, e.g. [::1]:8000`},
		{"300.0.0.1:80", `servers.txt:1: bad IPv4 address "300.0.0.1"`},
		{"0.0.0.0:80", `servers.txt:1: address 0.0.0.0 means any address and cannot be dialled: write the backend's own address`},
		{"[::]:80", `servers.txt:1: address :: means any address and cannot be dialled: write the backend's own address`},
		{"exa$mple:80", `servers.txt:1: bad host "exa$mple": want a hostname or an IP address`},
		{name253 + "x:80", `servers.txt:1: bad host "` + name253 + `x": want a hostname or an IP address`},
		{strings.Repeat("x", 64) + ":80", `servers.txt:1: bad host "` + strings.Repeat("x", 64) + `": want a hostname or an IP address`},
		{"http:///", `servers.txt:1: missing host in "http:///": write host:port, e.g. 127.0.0.1:8000`},
		{"a..b:80", `servers.txt:1: bad host "a..b": want a hostname or an IP address`},
		{"a:1 weight=0", `servers.txt:1: bad weight "0": want 1-1000`},
		{"a:1 weight=1001", `servers.txt:1: bad weight "1001": want 1-1000`},
		{"a:1 weight=x", `servers.txt:1: bad weight "x": want 1-1000`},
		{"a:1 weight=2 weight=2", `servers.txt:1: weight given twice: keep one`},
		{"a:1 id=", `servers.txt:1: bad id "": want 1-64 letters, digits, '-', '_' or '.'`},
		{"a:1 id=a/b", `servers.txt:1: bad id "a/b": want 1-64 letters, digits, '-', '_' or '.'`},
		{"a:1 id=" + strings.Repeat("x", 65), `servers.txt:1: bad id "` + strings.Repeat("x", 65) + `": want 1-64 letters, digits, '-', '_' or '.'`},
		{"a:1 id=x id=y", `servers.txt:1: id given twice: keep one`},
		{"a:1\nb:1 proxy=v3", `servers.txt:2: bad proxy "v3": want v1 or v2 (the PROXY protocol version the backend accepts)`},
		{"a:1 proxy=v1 proxy=v2", `servers.txt:1: proxy given twice: keep one`},
		{"a:1 check=http", `servers.txt:1: bad check "http": want tcp or http:/PATH, e.g. check=http:/health`},
		{"a:1 check=http:health", `servers.txt:1: bad check "http:health": want tcp or http:/PATH, e.g. check=http:/health`},
		{"a:1 check=http:/a\x01", "servers.txt:1: bad check \"http:/a\\x01\": want tcp or http:/PATH, e.g. check=http:/health"},
		{"a:1 check=udp", `servers.txt:1: bad check "udp": want tcp or http:/PATH, e.g. check=http:/health`},
		{"a:1 check=tcp check=tcp", `servers.txt:1: check given twice: keep one`},
		{"a:1 maxconn=0", `servers.txt:1: bad maxconn "0": want 1-1000000`},
		{"a:1 maxconn=x", `servers.txt:1: bad maxconn "x": want 1-1000000`},
		{"a:1 maxconn=1 maxconn=1", `servers.txt:1: maxconn given twice: keep one`},
		{"a:1 color=red", `servers.txt:1: unknown option "color=red": want weight=N, id=NAME, proxy=v1|v2, check=tcp|http:/PATH or maxconn=N, one backend per line`},
		{"a:1 b:2", `servers.txt:1: unknown option "b:2": want weight=N, id=NAME, proxy=v1|v2, check=tcp|http:/PATH or maxconn=N, one backend per line`},
		{"a:1 weight", `servers.txt:1: unknown option "weight": want weight=N, id=NAME, proxy=v1|v2, check=tcp|http:/PATH or maxconn=N, one backend per line`},
		{"127.0.0.1:8000\n\n\n\nhttp://127.0.0.1:8000/", `servers.txt:5: duplicate backend 127.0.0.1:8000 (first on line 1)`},
		{"a:1 id=web\nb:2 id=web", `servers.txt:2: duplicate id "web" (first on line 1)`},
		{"a:1\nb:2 id=" + hashID("a:1") + "\nc:3 id=" + longID("a:1"), `servers.txt:1: the automatic id "` + longID("a:1") + `" of a:1 is taken (first on line 3): give this backend an id=`},
		{"a:1\n" + strings.Repeat("x", 70000), "servers.txt:2: line too long: keep lines under 64 KiB"},
	}
	for _, tt := range tests {
		got, err := Parse("servers.txt", strings.NewReader(tt.in))
		var le *LineError
		if !errors.As(err, &le) {
			t.Errorf("Parse(%.40q) = %v, %v; want a *LineError", tt.in, got, err)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("Parse(%.40q) error:\n got  %s\n want %s", tt.in, err, tt.want)
		}
	}
}

// The example shipped in testdata must stay valid.
func TestLoadExample(t *testing.T) {
	got, err := Load(filepath.Join("..", "testdata", "servers.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := []ring.Backend{
		{ID: hashID("127.0.0.1:8000"), Addr: "127.0.0.1:8000", Weight: 1},
		{ID: hashID("127.0.0.1:8001"), Addr: "127.0.0.1:8001", Weight: 2},
		{ID: "backend-3", Addr: "127.0.0.1:8002", Weight: 1},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Load = %v, want %v", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.txt")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing) = %v, want ErrNotExist naming %s", err, path)
	}

	bad := filepath.Join(t.TempDir(), "servers.txt")
	if err := os.WriteFile(bad, []byte("a:1\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	var le *LineError
	if !errors.As(err, &le) || le.File != bad || le.Line != 2 {
		t.Errorf("Load(bad) = %v, want a *LineError at %s:2", err, bad)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("127.0.0.1:8000\nhttp://localhost:8001/ weight=2\n[::1]:8002 id=x # c\n")
	f.Add("a:1 proxy=v2 check=http:/health maxconn=10\nb:2 proxy=v1 check=tcp\n")
	f.Fuzz(func(t *testing.T, in string) {
		backends, err := Parse("f", strings.NewReader(in))
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error %v is not a *LineError naming the file", err)
			}
			return
		}
		if len(backends) == 0 {
			t.Fatal("no error and no backends")
		}
		for _, b := range backends {
			host, port, err := net.SplitHostPort(b.Addr)
			if err != nil || host == "" {
				t.Fatalf("backend %v: bad address: %v", b, err)
			}
			if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
				t.Fatalf("backend %v: bad port", b)
			}
			if !validID(b.ID) || b.Weight < 1 || b.Weight > maxWeight {
				t.Fatalf("backend %v: bad id or weight", b)
			}
			if b.Proxy != "" && b.Proxy != "v1" && b.Proxy != "v2" || b.MaxConn < 0 || b.MaxConn > maxMaxConn || b.Check != "" && checkReason(b.Check) != "" {
				t.Fatalf("backend %v: bad proxy, maxconn or check", b)
			}
			if path, ok := strings.CutPrefix(b.Check, "http:"); ok && strings.ContainsAny(path, " \r\n") {
				t.Fatalf("backend %v: a check path that would break the request line", b)
			}
		}
		// The ring rejects a duplicate ID or address: accepted files must never have one.
		if _, err := ring.New(backends...); err != nil {
			t.Fatalf("ring.New: %v", err)
		}
	})
}

func TestParseLineChecksAsTheFileDoes(t *testing.T) {
	b, err := ParseLine("HTTP://LocalHost:8000/ weight=3")
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := Parse("f", strings.NewReader("http://localhost:8000 weight=3\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b != fromFile[0] {
		t.Errorf("ParseLine = %+v, the file gives %+v", b, fromFile[0])
	}
	for line, want := range map[string]string{
		"":                        "no address",
		"127.0.0.1:99999":         `bad port "99999": want 1-65535`,
		"127.0.0.1:80 weight=0":   `bad weight "0": want 1-1000`,
		"127.0.0.1:80 id=a/b":     `bad id "a/b"`,
		"https://example.com:443": "cannot terminate TLS",
	} {
		if _, err := ParseLine(line); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseLine(%q) = %v, want an error containing %q", line, err, want)
		}
	}
}

// FuzzParseLine holds ParseLine to the file's rules: a line it accepts, the file accepts as
// the same backend; a line it refuses, the file refuses.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "http://Example.COM/ weight=3 id=x", "[::1]:8000 id=a.b", "127.0.0.1:99999", "a:1 weight=2 weight=3", "[fe80::1%eth0]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\n\r#\uFEFF") {
			return // one line, no comment: what the file would read differently
		}
		b, err := ParseLine(line)
		fromFile, ferr := Parse("f", strings.NewReader(line+"\n"))
		switch {
		case err == nil && ferr != nil:
			t.Fatalf("ParseLine(%q) = %+v, but the file refuses it: %v", line, b, ferr)
		case err != nil && ferr == nil:
			t.Fatalf("ParseLine(%q) refuses it (%v), but the file reads %+v", line, err, fromFile)
		case err == nil && b != fromFile[0]:
			t.Fatalf("ParseLine(%q) = %+v, the file reads %+v", line, b, fromFile[0])
		}
	})
}

// TestNewBackendTakesOnlyItsParts: each part is checked whole, so whitespace that
// strings.Fields splits on (\v, \f, U+0085, U+00A0) cannot smuggle proxy=, maxconn= or
// check= into the backend, as it could through a line built from the parts.
func TestNewBackendTakesOnlyItsParts(t *testing.T) {
	b, err := NewBackend("HTTP://LocalHost:8000/", "web-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := Parse("f", strings.NewReader("http://localhost:8000 id=web-1 weight=3\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b != fromFile[0] {
		t.Errorf("NewBackend = %+v, the file gives %+v", b, fromFile[0])
	}
	if b, err := NewBackend("127.0.0.1:8000", "", 0); err != nil || b.Weight != 1 || b.ID != addrID("127.0.0.1:8000", 4) {
		t.Errorf("NewBackend without id and weight = %+v, %v; want weight 1 and the address's id", b, err)
	}
	for _, sep := range []string{"\v", "\f", "\u0085", "\u00a0", " ", "\t"} {
		for _, opt := range []string{"proxy=v2", "maxconn=1", "check=http:/x"} {
			if b, err := NewBackend("127.0.0.1:8000"+sep+opt, "", 0); err == nil {
				t.Errorf("NewBackend(addr %q) = %+v; want it refused", "127.0.0.1:8000"+sep+opt, b)
			}
			if b, err := NewBackend("127.0.0.1:8000", "x"+sep+opt, 0); err == nil || !strings.Contains(err.Error(), "bad id") {
				t.Errorf("NewBackend(id %q) = %+v, %v; want a bad id", "x"+sep+opt, b, err)
			}
		}
	}
	for _, c := range []struct {
		addr, id string
		weight   int
		want     string
	}{
		{"", "", 0, "missing host"},
		{"127.0.0.1:99999", "", 0, `bad port "99999": want 1-65535`},
		{"127.0.0.1:80", "", 1001, `bad weight "1001": want 1-1000`},
		{"127.0.0.1:80", "", -1, `bad weight "-1": want 1-1000`},
		{"127.0.0.1:80", "a/b", 0, `bad id "a/b"`},
		{"https://example.com:443", "", 0, "cannot terminate TLS"},
	} {
		if _, err := NewBackend(c.addr, c.id, c.weight); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewBackend(%q, %q, %d) = %v, want an error containing %q", c.addr, c.id, c.weight, err, c.want)
		}
	}
}
