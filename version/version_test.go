package version

import (
	"strings"
	"testing"
)

func TestBuildVersionStamped(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "v1.2.0", "84853d4c1a2b3c4d5e6f", "2026-11-30T04:00:00Z"
	if got, want := String(), "v1.2.0 commit 84853d4c1a2b built 2026-11-30T04:00:00Z"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	version, commit, date = "", "", ""
	if got := String(); !strings.Contains(got, " commit ") || !strings.Contains(got, " built ") {
		t.Fatalf("unstamped String() = %q: want the version, the commit and the date, even if unknown", got)
	}
}
