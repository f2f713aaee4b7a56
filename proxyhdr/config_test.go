package proxyhdr

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for s, want := range map[string]Version{"": None, "v1": V1, "v2": V2} {
		if v, err := ParseVersion(s); err != nil || v != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", s, v, err, want)
		}
	}
	for _, s := range []string{"v3", "1", "V2", "proxy"} {
		if _, err := ParseVersion(s); err == nil || !strings.Contains(err.Error(), "want v1 or v2") {
			t.Errorf("ParseVersion(%q): %v, want an error saying v1 or v2", s, err)
		}
	}
	if got := string(Append(nil, V2, v4src, v4dst)); got != string(AppendV2(nil, v4src, v4dst)) {
		t.Errorf("Append(V2) = %q", got)
	}
	if got := Append([]byte("x"), None, v4src, v4dst); string(got) != "x" {
		t.Errorf("Append(None) = %q, want nothing appended", got)
	}
}

func TestTrusted(t *testing.T) {
	tr, err := ParseTrusted(" 10.0.0.0/8, 192.0.2.7,2001:db8::/32 ,::ffff:198.51.100.0/120, 172.16.1.2/12")
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.String(); got != "10.0.0.0/8,192.0.2.7/32,2001:db8::/32,198.51.100.0/24,172.16.0.0/12" {
		t.Errorf("ParseTrusted: %s", got)
	}
	for a, want := range map[string]bool{
		"10.1.2.3": true, "::ffff:10.1.2.3": true, "11.0.0.1": false, "192.0.2.7": true, "192.0.2.8": false,
		"2001:db8:1::5": true, "2001:db9::1": false, "198.51.100.200": true, "172.31.255.255": true, "fe80::1%eth0": false,
	} {
		if got := tr.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", a, got, want)
		}
	}
	if empty, err := ParseTrusted(""); err != nil || len(empty) != 0 || empty.Contains(netip.MustParseAddr("127.0.0.1")) {
		t.Errorf(`ParseTrusted(""): %v, %v; want an empty set that trusts no one`, empty, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0.0/8,", "host.example", "10.0.0.0/8,,10.1.0.0/16", "fe80::/10%eth0", "::/129"} {
		if _, err := ParseTrusted(bad); err == nil {
			t.Errorf("ParseTrusted(%q) accepted", bad)
		}
	}
	if n := testing.AllocsPerRun(100, func() { tr.Contains(netip.MustParseAddr("2001:db9::1")) }); n != 0 {
		t.Errorf("Contains: %v allocs, want 0", n)
	}
}

// FuzzParseTrusted: whatever ParseTrusted accepts is a list of masked prefixes, each of
// which contains its own address, and its String parses back to the same list.
func FuzzParseTrusted(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", " 192.0.2.7 ,2001:db8::/32", "::ffff:10.0.0.0/104", "10.0.0.0/33", "", "1.2.3.4/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tr, err := ParseTrusted(s)
		if err != nil {
			return
		}
		for _, p := range tr {
			if p != p.Masked() || !tr.Contains(p.Addr()) {
				t.Fatalf("ParseTrusted(%q) holds %v, which is not masked or not contained", s, p)
			}
		}
		again, err := ParseTrusted(tr.String())
		if err != nil || again.String() != tr.String() {
			t.Fatalf("ParseTrusted(%q) = %s, which reads back as %s, %v", s, tr, again, err)
		}
	})
}
