package serversfile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func longID(addr string) string {
	sum := sha256.Sum256([]byte(addr))
	return hex.EncodeToString(sum[:8])
}

// TestAutomaticIDsNeverCollide parses a file of 1,000,000 addresses with no id=: among them
// about a hundred pairs share their first 8 hex digits, and each must still get an id of
// its own.
func TestAutomaticIDsNeverCollide(t *testing.T) {
	if testing.Short() {
		t.Skip("a million lines: skipped with -short")
	}
	var sb strings.Builder
	const n = 1_000_000
	for i := range n {
		fmt.Fprintf(&sb, "10.%d.%d.%d:%d\n", i>>16&255, i>>8&255, i&255, 8000+i>>24)
	}
	backends, err := Parse("big.txt", strings.NewReader(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool, n)
	long := 0
	for _, b := range backends {
		if seen[b.ID] {
			t.Fatalf("id %q given twice", b.ID)
		}
		seen[b.ID] = true
		if len(b.ID) == 16 {
			long++
			if b.ID != longID(b.Addr) {
				t.Fatalf("%s: long id %q, want %q", b.Addr, b.ID, longID(b.Addr))
			}
		}
	}
	for _, b := range backends {
		if len(b.ID) == 16 && seen[hashID(b.Addr)] {
			t.Fatalf("%s got the long id while another backend kept the short one, %q: which one gets it would depend on the order of lines", b.Addr, hashID(b.Addr))
		}
	}
	if long < 2 || long > 1000 {
		t.Errorf("%d of %d backends got the long id: want the few whose short ids collide", long, n)
	}
}

// TestCollidingIDsDoNotDependOnOrder: an automatic id that another backend's short id or an
// id= takes becomes the long one, whichever line comes first.
func TestCollidingIDsDoNotDependOnOrder(t *testing.T) {
	for _, in := range []string{"a:1\nb:2 id=" + hashID("a:1"), "b:2 id=" + hashID("a:1") + "\na:1"} {
		backends, err := Parse("s.txt", strings.NewReader(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		for _, b := range backends {
			if want := map[string]string{"a:1": longID("a:1"), "b:2": hashID("a:1")}[b.Addr]; b.ID != want {
				t.Errorf("%q: %s has id %q, want %q", in, b.Addr, b.ID, want)
			}
		}
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	var le *LineError
	if !errors.As(err, &le) || le.Error() != dir+": is a directory: give the servers file itself, one backend per line" {
		t.Errorf("Load(a directory) = %v, want the one-sentence LineError", err)
	}
}
