package accesslog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func entry(i int) *Entry {
	return &Entry{
		Client:      netip.MustParseAddrPort(fmt.Sprintf("[2001:db8::%x]:%d", i+1, 40000+i)),
		Listener:    "127.0.0.1:7777",
		BackendID:   "web-1",
		BackendAddr: "10.0.0.1:8080",
		Sniff:       "http1",
		Method:      []byte("GET"),
		Host:        []byte("shop.example"),
		Path:        []byte(fmt.Sprintf("/item/%d?q=\"x\"", i)),
		Sticky:      "hit",
		BytesUp:     uint64(100 + i),
		BytesDown:   uint64(5000 + i),
		Duration:    1500 * time.Microsecond,
		Cause:       BackendClosed,
	}
}

// readLines returns the lines of path, which must be n; call it after Close or Reopen, which
// write out what was logged before them.
func readLines(t *testing.T, path string, n int) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	if len(b) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	if len(lines) != n {
		t.Fatalf("%s: %d lines, want %d", path, len(lines), n)
	}
	return lines
}

func open(t *testing.T, cfg Config) *Logger {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Enabled() {
		t.Fatalf("Open(%+v) gave a log that is off", cfg)
	}
	return l
}

func TestNConnectionsGiveNLinesWithTheirFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := open(t, Config{Dest: path, Format: "json"})
	const n = 50
	for i := range n {
		l.Log(entry(i))
	}
	l.Log(&Entry{Client: netip.MustParseAddrPort("192.0.2.7:5555"), Listener: "[::1]:7777", Sniff: "tls", Duration: time.Second, Cause: Refused, Err: errors.New("no backend up")})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path, n+1)
	for i := range n {
		var got map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, lines[i])
		}
		want := map[string]any{
			"client": fmt.Sprintf("[2001:db8::%x]:%d", i+1, 40000+i), "listener": "127.0.0.1:7777",
			"backend": "web-1", "backend_addr": "10.0.0.1:8080", "sniff": "http1", "method": "GET",
			"host": "shop.example", "path": fmt.Sprintf("/item/%d?q=\"x\"", i), "sticky": "hit",
			"bytes_up": float64(100 + i), "bytes_down": float64(5000 + i), "duration_ms": 1.5, "cause": "backend_closed",
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("line %d: %s = %v, want %v", i, k, got[k], w)
			}
		}
		if ts, err := time.Parse(timeFormat, got["time"].(string)); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("line %d: time %v (%v): want now, in RFC 3339 with milliseconds", i, got["time"], err)
		}
		if len(got) != len(want)+1 {
			t.Errorf("line %d has %d fields, want %d: %s", i, len(got), len(want)+1, lines[i])
		}
	}
	var refused map[string]any
	if err := json.Unmarshal([]byte(lines[n]), &refused); err != nil {
		t.Fatal(err)
	}
	for k, w := range map[string]any{"client": "192.0.2.7:5555", "sniff": "tls", "cause": "refused", "error": "no backend up", "duration_ms": 1000.0, "bytes_up": 0.0} {
		if refused[k] != w {
			t.Errorf("refused line: %s = %v, want %v", k, refused[k], w)
		}
	}
	for _, k := range []string{"backend", "method", "host", "path", "sticky"} {
		if _, ok := refused[k]; ok {
			t.Errorf("refused line has %s, empty in its Entry: %s", k, lines[n])
		}
	}
}

func TestConsoleFormatOneReadableLinePerConnection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := open(t, Config{Dest: path, Format: "console"})
	for i := range 3 {
		l.Log(entry(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path, 3)
	want := `client=[2001:db8::2]:40001 listener=127.0.0.1:7777 backend=web-1 backend_addr=10.0.0.1:8080 sniff=http1 method=GET host=shop.example path="/item/1?q=\"x\"" sticky=hit bytes_up=101 bytes_down=5001 duration_ms=1.5 cause=backend_closed`
	if !strings.HasSuffix(lines[1], want) {
		t.Errorf("console line\n%s\ndoes not end with\n%s", lines[1], want)
	}
	if ts, _, _ := strings.Cut(lines[1], " "); !strings.HasPrefix(lines[1], ts+" client=") {
		t.Errorf("console line does not start with the time and then the client (no level): %s", lines[1])
	} else if _, err := time.Parse(timeFormat, ts); err != nil {
		t.Errorf("console time %q: %v", ts, err)
	}
	if strings.Contains(lines[1], "\x1b[") {
		t.Errorf("console line has colour escapes: %q", lines[1])
	}
}

// TestReopenAfterRename does what logrotate does: rename the file, then SIGUSR1 (Reopen).
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l := open(t, Config{Dest: path})
	for i := range 10 {
		l.Log(entry(i))
	}
	if err := os.Rename(path, path+".1"); err != nil { // the 10 lines may still be buffered
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	readLines(t, path+".1", 10) // Reopen wrote them to the renamed file first
	for i := 10; i < 25; i++ {
		l.Log(entry(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, cur := readLines(t, path+".1", 10), readLines(t, path, 15)
	if !strings.Contains(old[9], `"/item/9?`) || !strings.Contains(cur[0], `"/item/10?`) || !strings.Contains(cur[14], `"/item/24?`) {
		t.Errorf("lines in the wrong file:\nrotated last: %s\nnew first: %s\nnew last: %s", old[9], cur[0], cur[14])
	}
}

func TestReopenFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "logs")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "access.log")
	l := open(t, Config{Dest: path})
	if err := os.Rename(sub, filepath.Join(dir, "moved")); err != nil { // the path's directory is gone
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("Reopen succeeded with the log's directory gone")
	}
	l.Log(entry(0))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	readLines(t, filepath.Join(dir, "moved", "access.log"), 1) // still written, to the old file
}

func TestOffIsNilAndFree(t *testing.T) {
	for _, dest := range []string{"", "off"} {
		l, err := Open(Config{Dest: dest, Format: "console"})
		if err != nil || l != nil {
			t.Fatalf("Open(%q) = %v, %v; want nil, nil", dest, l, err)
		}
		if l.Enabled() {
			t.Error("a nil Logger says it is enabled")
		}
		e := entry(1)
		if a := testing.AllocsPerRun(100, func() { l.Log(e) }); a != 0 {
			t.Errorf("Log with the log off: %v allocs, want 0", a)
		}
		if l.Reopen() != nil || l.Close() != nil || l.Dropped() != 0 {
			t.Error("a nil Logger's Reopen, Close or Dropped did something")
		}
	}
}

func TestJSONLineDoesNotAllocate(t *testing.T) {
	l := open(t, Config{Dest: filepath.Join(t.TempDir(), "access.log"), MaxBuffered: 64 << 20})
	defer l.Close()
	e := entry(3)
	if a := testing.AllocsPerRun(1000, func() { l.Log(e) }); a > 0 {
		t.Errorf("Log (json): %v allocs per line, want 0", a)
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := Open(Config{Dest: "stdout", Format: "xml"}); !errors.Is(err, ErrFormat) {
		t.Errorf("format xml: %v, want ErrFormat", err)
	}
	if _, err := Open(Config{Dest: filepath.Join(t.TempDir(), "no", "such", "dir")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file in a missing directory: %v, want a not-exist error", err)
	}
}

// TestSlowDestinationDropsInsteadOfBlocking: a pipe nobody reads fills; Log must go on
// returning, and count what it could not keep.
func TestSlowDestinationDropsInsteadOfBlocking(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var warned strings.Builder
	var mu sync.Mutex
	logw := zerolog.SyncWriter(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return warned.Write(p)
	}))
	out := &output{file: w, path: "pipe"} // path set: Close closes the pipe's write end
	l := &Logger{w: newAsyncWriter(out, out, 8<<10, zerolog.New(logw))}
	l.zl = zerolog.New(l.w)

	done := make(chan struct{})
	const n = 5000 // ~1.5 MB of lines: far more than the pipe (64 KiB) and the buffer hold
	go func() {
		defer close(done)
		for i := range n {
			l.Log(entry(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Log blocked on a destination that does not read")
	}
	if l.Dropped() == 0 {
		t.Fatal("nothing dropped although the destination took nothing")
	}
	dropped := l.Dropped()
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	// Read what got through, so the writer can finish; count whole lines.
	got := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Fatalf("a torn line: %q", sc.Text())
		}
		got++
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if uint64(got)+dropped != n {
		t.Errorf("%d lines written + %d dropped = %d, want %d", got, dropped, uint64(got)+dropped, n)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(warned.String(), "access log lines dropped") {
		t.Errorf("no warning about dropped lines; lb's log: %s", warned.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestConcurrentLoopsLinesStayWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := open(t, Config{Dest: path, MaxBuffered: 16 << 20})
	const loops, each = 4, 500
	var wg sync.WaitGroup
	for g := range loops {
		wg.Go(func() {
			for i := range each {
				l.Log(entry(g*each + i))
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range readLines(t, path, loops*each) {
		var e struct{ Path string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("torn line: %v: %s", err, line)
		}
		seen[e.Path] = true
	}
	if len(seen) != loops*each {
		t.Errorf("%d distinct lines, want %d", len(seen), loops*each)
	}
}
