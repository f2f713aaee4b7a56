package accesslog

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// lbLog is lb's own log as a test sees it: one JSON object per line.
type lbLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lbLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// messages returns the lines whose message is msg, decoded.
func (l *lbLog) messages(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("lb's log: %v: %s", err, line)
		}
		if m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

const (
	msgFailing = "cannot write the access log; lines are lost until it works again"
	msgWorks   = "access log writes work again"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

// TestOutageReportedOnceWhenItStartsAndOnceWhenItEnds: a destination that fails for 200
// lines, with spurious wake-ups of the writer in between, then works: lb logs the outage
// once as it starts and once as it ends, with the 200 lines lost.
func TestOutageReportedOnceWhenItStartsAndOnceWhenItEnds(t *testing.T) {
	var failing atomic.Bool
	var attempts, written atomic.Int64
	failing.Store(true)
	dst := writerFunc(func(p []byte) (int, error) {
		if failing.Load() {
			attempts.Add(1)
			return 0, errors.New("no space left on device")
		}
		written.Add(1)
		return len(p), nil
	})
	var log lbLog
	w := newAsyncWriter(dst, &output{}, 1<<20, zerolog.New(&log))
	l := &Logger{w: w, zl: zerolog.New(w)}
	const n = 200
	for i := range n {
		l.Log(entry(i))
		select {
		case w.wake <- struct{}{}: // a wake-up with nothing to write
		default:
		}
	}
	waitFor(t, "the writer tried every line", func() bool { return attempts.Load() == n })
	for range 50 {
		w.wake <- struct{}{} // each taken by the writer: spurious, the buffer is empty
	}
	if got := log.messages(t, msgWorks); len(got) != 0 {
		t.Fatalf("a wake-up with nothing written cleared the outage: %v", got)
	}
	failing.Store(false)
	l.Log(entry(n))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := log.messages(t, msgFailing); len(got) != 1 {
		t.Errorf("%d reports of the outage starting, want 1", len(got))
	}
	ends := log.messages(t, msgWorks)
	if len(ends) != 1 {
		t.Fatalf("%d reports of the outage ending, want 1", len(ends))
	}
	if ends[0]["lost"] != float64(n) {
		t.Errorf("the end of the outage reports %v lines lost, want %d", ends[0]["lost"], n)
	}
	if written.Load() != 1 {
		t.Errorf("%d lines written after the outage, want 1", written.Load())
	}
}

// TestFullFilesystem: an access log on a 64 KiB tmpfs fills it; lb reports the outage once,
// and once more when space is freed and writes work again. Needs root (mount); skipped
// otherwise.
func TestFullFilesystem(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	var log lbLog
	path := filepath.Join(dir, "access.log")
	l, err := Open(Config{Dest: path, Log: zerolog.New(&log)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 { // ~600 KB of lines into 64 KiB
		l.Log(entry(i))
	}
	waitFor(t, "the outage reported", func() bool { return len(log.messages(t, msgFailing)) > 0 })
	waitFor(t, "the buffer written out", func() bool {
		l.w.mu.Lock()
		defer l.w.mu.Unlock()
		return len(l.w.buf) == 0
	})
	if err := os.Truncate(path, 0); err != nil { // the operator frees space
		t.Fatal(err)
	}
	l.Log(entry(2000))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := log.messages(t, msgFailing); len(got) != 1 {
		t.Errorf("%d reports of the outage starting, want 1", len(got))
	}
	ends := log.messages(t, msgWorks)
	if len(ends) != 1 {
		t.Fatalf("%d reports of the outage ending, want 1; lb's log:\n%s", len(ends), log.buf.String())
	}
	if lost, _ := ends[0]["lost"].(float64); lost < 1000 {
		t.Errorf("the end of the outage reports %v lines lost, want most of 2000", ends[0]["lost"])
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Contains(b, []byte(`"/item/2000?`)) {
		t.Errorf("the line logged after space was freed is not in the file: %v, %q", err, b)
	}
}
