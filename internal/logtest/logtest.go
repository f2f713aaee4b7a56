// Package logtest records what a zerolog.Logger writes, for tests that check what was
// logged and how often: one decoded JSON object per line, from any number of goroutines.
package logtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Lines is the log a logger from New writes to.
type Lines struct {
	mu   sync.Mutex
	all  []map[string]any
	next chan map[string]any // for Await; lines that find it full are only in all
}

// New returns an empty log and a logger that writes to it.
func New() (*Lines, zerolog.Logger) {
	l := &Lines{next: make(chan map[string]any, 100)}
	return l, zerolog.New(l)
}

// Write takes one line of zerolog's JSON output.
func (l *Lines) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.all = append(l.all, m)
	l.mu.Unlock()
	select {
	case l.next <- m:
	default: // a test that does not await must not block the logging goroutine
	}
	return len(p), nil
}

// All returns the lines so far, oldest first.
func (l *Lines) All() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]map[string]any(nil), l.all...)
}

// Count returns how many lines so far have this message.
func (l *Lines) Count(msg string) int {
	n := 0
	for _, m := range l.All() {
		if m["message"] == msg {
			n++
		}
	}
	return n
}

// Await returns the next line with this message that no earlier Await has passed over,
// failing t if none comes within the given time.
func (l *Lines) Await(t testing.TB, msg string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-l.next:
			if m["message"] == msg {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q logged within %v; the log:\n%s", msg, within, l)
			return nil
		}
	}
}

// String is the log, a line each, for failure messages.
func (l *Lines) String() string {
	var b strings.Builder
	for _, m := range l.All() {
		fmt.Fprintln(&b, m)
	}
	return b.String()
}
