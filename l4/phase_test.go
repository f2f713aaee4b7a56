//go:build linux

package l4

import (
	"os"
	"strings"
	"testing"
)

// TestDocShowsTheTable: the package doc's copy of the transition table is the one the code
// runs (rules).
func TestDocShowsTheTable(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var shown strings.Builder
	for _, line := range strings.Split(string(doc), "\n") {
		if row, ok := strings.CutPrefix(line, "//\t|"); ok {
			shown.WriteString("|" + row + "\n")
		}
	}
	if want := phaseTable(); shown.String() != want {
		t.Errorf("doc.go shows\n%s\nthe code's table is\n%s", shown.String(), want)
	}
}

// TestEveryPhaseCanClose: an error can come in any phase a connection waits in, and close
// must be a move the table allows from each.
func TestEveryPhaseCanClose(t *testing.T) {
	for p := sniffing; p < closed; p++ {
		if rules[p].next&(1<<closed) == 0 {
			t.Errorf("%v cannot move to closed", p)
		}
	}
}

// TestEnterCountsAMoveOffTheTable: a transition the table does not have is counted (every
// test server checks the count is 0 when it shuts down) and logged.
func TestEnterCountsAMoveOffTheTable(t *testing.T) {
	s := startServer(t, testConfig())
	l := s.loops[0]
	l.call(func() {
		c := l.conns.add()
		c.lc = l.stats.listener(nil) // as admit gives it one
		c.pool = (*s.pools.Load())[0]
		l.enter(c, closed)    // from unused: in the table
		l.enter(c, lookingUp) // from closed: not in it
		l.conns.remove(c)
	})
	if n := s.badMoves.Swap(0); n != 1 { // 0 again, for the server's own check at cleanup
		t.Fatalf("%d moves counted off the table, want 1", n)
	}
}
