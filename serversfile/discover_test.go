package serversfile

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseFileDiscover(t *testing.T) {
	in := `127.0.0.1:8000
App.NS.svc.cluster.local.:8080 discover=a weight=4
_http._tcp.app.consul discover=srv
app.ns.svc.cluster.local:9090 discover=a
`
	f, err := ParseFile("s", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Discover{
		{Line: 2, Mode: "a", Name: "app.ns.svc.cluster.local", Port: 8080, Weight: 4},
		{Line: 3, Mode: "srv", Name: "_http._tcp.app.consul"},
		{Line: 4, Mode: "a", Name: "app.ns.svc.cluster.local", Port: 9090, Weight: 1},
	}
	if !slices.Equal(f.Discover, want) || len(f.Backends) != 1 || f.Backends[0].Addr != "127.0.0.1:8000" {
		t.Fatalf("ParseFile = %+v\nwant backends [127.0.0.1:8000] and discover %+v", f, want)
	}
	// A file of discover lines only is a good file: the backends come from DNS.
	if f, err := ParseFile("s", strings.NewReader("app:80 discover=a\n")); err != nil || len(f.Discover) != 1 {
		t.Fatalf("discover line alone: %+v, %v", f, err)
	}
	// Parse, which returns backends only, refuses them rather than drop them.
	if _, err := Parse("s", strings.NewReader("app:80 discover=a\n")); err == nil || !strings.Contains(err.Error(), "s:1: discover=") {
		t.Fatalf("Parse of a discover line: %v, want an error at s:1", err)
	}
}

func TestParseFileDiscoverBad(t *testing.T) {
	tests := []struct{ in, reason string }{
		{"10.0.0.1:80 discover=a", "needs a host name"},
		{"[::1]:80 discover=a", "needs a host name"},
		{"app discover=a", "missing port"},
		{"app:80 discover=aaaa", "want discover=a"},
		{"app:80 discover=a id=x", "id= does not go with discover="},
		{"app:80 discover=a weight=0", "bad weight"},
		{"app:80 discover=a discover=srv", "discover given twice"},
		{"app:80 discover=a maxconn=3", "unknown option"},
		{"_http._tcp.app:80 discover=srv", "without a port"},
		{"app.consul discover=srv", "needs an SRV name"},
		{"_x._tcp.app discover=srv weight=2", "the SRV records give the weights"},
		{"app:80 discover=a\napp:80 discover=a", "duplicate discover line (first on line 1)"},
	}
	for _, tt := range tests {
		_, err := ParseFile("s", strings.NewReader(tt.in))
		var le *LineError
		if !errors.As(err, &le) || !strings.Contains(le.Reason, tt.reason) {
			t.Errorf("ParseFile(%q) = %v, want a *LineError saying %q", tt.in, err, tt.reason)
		}
	}
}

func TestAddrIDMatchesAFileLine(t *testing.T) {
	f, err := ParseFile("s", strings.NewReader("10.1.2.3:8080\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := AddrID("10.1.2.3:8080", false); got != f.Backends[0].ID {
		t.Fatalf("AddrID = %q, the file's line got %q: a pod listed by hand and found in DNS must share cookies", got, f.Backends[0].ID)
	}
	if len(AddrID("10.1.2.3:8080", true)) != 16 {
		t.Fatal("the long id is not 16 hex digits")
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add("app:80 discover=a weight=2\n_http._tcp.x discover=srv\n127.0.0.1:1\n")
	f.Fuzz(func(t *testing.T, in string) {
		file, err := ParseFile("f", strings.NewReader(in))
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not a *LineError", err)
			}
			return
		}
		if len(file.Backends)+len(file.Discover) == 0 {
			t.Fatal("no error, no backends and no discover lines")
		}
		for _, d := range file.Discover {
			switch {
			case !validHostname(d.Name) || strings.HasSuffix(d.Name, ".") || d.Name != strings.ToLower(d.Name):
				t.Fatalf("%+v: bad name", d)
			case d.Mode == "a" && (d.Port < 1 || d.Port > 65535 || d.Weight < 1 || d.Weight > maxWeight):
				t.Fatalf("%+v: bad port or weight", d)
			case d.Mode == "srv" && (d.Port != 0 || d.Weight != 0 || d.Name[0] != '_'):
				t.Fatalf("%+v: srv with a port or weight", d)
			case d.Mode != "a" && d.Mode != "srv":
				t.Fatalf("%+v: bad mode", d)
			}
		}
	})
}
