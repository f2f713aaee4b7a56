package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lbBin is the lb binary that TestMain builds for all tests.
var lbBin string

// Deadlines of the harness. They bound waits on conditions; a healthy run meets each in
// milliseconds.
const (
	startDeadline = 15 * time.Second // lb or nginx accepting connections
	stopDeadline  = 15 * time.Second // a stopped process has exited
	runDeadline   = 30 * time.Second // a one-shot lb command (probe, a bad file) has exited
)

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

// buildAndRun builds lb into a temp dir, runs the tests and removes the dir.
func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lb-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	lbBin = filepath.Join(dir, "lb")
	args := []string{"build", "-o", lbBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "lb/cmd/lb")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build lb/cmd/lb: %v\n", err)
		return 1
	}
	return m.Run()
}

// lbEnv is the environment lb runs in: ours, without the race detector's default
// one-second sleep at exit.
func lbEnv() []string {
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// slow skips the test under -short, which README promises leaves out the soaks and the
// tests that take seconds by design; why says which this one is.
func slow(t *testing.T, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: " + why)
	}
}

// requireTool returns the path of an external program the test needs. Without it the test
// skips, or fails under CI=true, where every tool must be installed.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); isExecutable(p) {
		return p // Debian installs nginx there, outside a normal user's PATH
	}
	msg := fmt.Sprintf("%s not found on PATH or in /usr/sbin: install it (apt-get install %s) to run this end-to-end test", name, name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: required)")
	}
	t.Skip(msg)
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// lbProcess is one running `lb serve` or `lb demo`, logging JSON to stderr.
type lbProcess struct {
	Addr   string // where lb listens, from its "listening" log line
	stdout *lockedBuffer
	cmd    *exec.Cmd
	log    *logLines
	done   chan struct{} // closed once the process has exited and its stderr is read
	err    error         // cmd.Wait's result, set before done is closed
}

// startLB runs lb with args (extra env as KEY=VALUE), with JSON logs, and returns once lb
// has logged "listening". It stops lb when the test ends if the test did not.
func startLB(t *testing.T, env []string, args ...string) *lbProcess {
	t.Helper()
	return startLBWith(t, nil, env, args...)
}

// startLBWith is startLB with lb run by a wrapper command, such as prlimit.
func startLBWith(t *testing.T, wrapper, env []string, args ...string) *lbProcess {
	t.Helper()
	return startLBWithin(t, startDeadline, wrapper, env, args...)
}

// startLBWithin is startLBWith waiting up to within for lb's "listening" line, for a start
// whose length grows with its input.
func startLBWithin(t *testing.T, within time.Duration, wrapper, env []string, args ...string) *lbProcess {
	t.Helper()
	argv := append(append(append([]string{}, wrapper...), lbBin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(lbEnv(), "LB_LOG_FORMAT=json"), env...)
	stdout := &lockedBuffer{}
	cmd.Stdout = stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start lb: %v", err)
	}
	p := &lbProcess{stdout: stdout, cmd: cmd, log: newLogLines(), done: make(chan struct{})}
	go p.readAndWait(stderr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lb %s stderr:\n%s", strings.Join(args, " "), p.log.String())
		}
		p.kill()
	})

	listening, ok := p.log.waitFor(0, within, func(e logEntry) bool { return e.Message == "listening" })
	if !ok {
		t.Fatalf("lb %s: no \"listening\" line within %v (exited: %v)", strings.Join(args, " "), within, p.exited())
	}
	if listening.Listen == "" {
		t.Fatalf("lb logged \"listening\" without a listen address: %s", listening.raw)
	}
	p.Addr = listening.Listen
	return p
}

// readAndWait collects stderr line by line, then reaps the process.
func (p *lbProcess) readAndWait(stderr io.Reader) {
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.log.add(sc.Text())
	}
	io.Copy(io.Discard, stderr) // a line over 1 MiB: keep the pipe flowing
	p.log.close()
	p.err = p.cmd.Wait()
	close(p.done)
}

// exited reports whether lb has exited, and how.
func (p *lbProcess) exited() string {
	select {
	case <-p.done:
		return fmt.Sprintf("yes, %v", p.err)
	default:
		return "no"
	}
}

// signal sends sig to lb.
func (p *lbProcess) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal lb: %v", err)
	}
}

// wait waits for lb to exit and fails the test unless it exits with status 0 in time.
func (p *lbProcess) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("lb has not exited %v after SIGTERM", within)
	}
	if p.err != nil {
		t.Fatalf("lb exited with %v, want status 0", p.err)
	}
}

// stop sends SIGTERM and checks that lb exits 0.
func (p *lbProcess) stop(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	p.wait(t, stopDeadline)
}

// kill ends lb if it still runs; for cleanup after a failure.
func (p *lbProcess) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.done
}

// logEntry is one JSON log line of lb, with the fields the tests look at.
type logEntry struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	Listen  string `json:"listen"`
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Backend string `json:"backend"`
	Up      *int   `json:"up"`
	Sticky  string `json:"sticky"`
	Engine  string `json:"engine"`
	raw     string
}

// logLines is the stderr of a process, as it arrives.
type logLines struct {
	mu      sync.Mutex
	lines   []string
	closed  bool
	changed chan struct{} // closed and replaced when a line arrives or the stream ends
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *logLines) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
}

// len is how many lines have arrived: a mark for waitFor and entries.
func (l *logLines) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// entries parses the JSON lines from index from on; lines that are not JSON are skipped.
func (l *logLines) entries(from int) []logEntry {
	l.mu.Lock()
	lines := l.lines[min(from, len(l.lines)):]
	l.mu.Unlock()
	var out []logEntry
	for _, line := range lines {
		var e logEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			e.raw = line
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits up to within for a JSON line at index from or later that match accepts. It
// returns false at the deadline or when the stream ends without one.
func (l *logLines) waitFor(from int, within time.Duration, match func(logEntry) bool) (logEntry, bool) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		lines, closed, changed := l.lines[min(from, len(l.lines)):], l.closed, l.changed
		l.mu.Unlock()
		for _, line := range lines {
			var e logEntry
			if json.Unmarshal([]byte(line), &e) == nil {
				e.raw = line
				if match(e) {
					return e, true
				}
			}
		}
		from += len(lines)
		if closed {
			return logEntry{}, false
		}
		select {
		case <-changed:
		case <-deadline.C:
			return logEntry{}, false
		}
	}
}

// runLB runs a one-shot lb command and returns its stdout, stderr and exit status.
func runLB(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, lbBin, args...)
	cmd.Env = lbEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		status = exit.ExitCode()
	default:
		t.Fatalf("lb %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String(), status
}

// runRefused runs an lb command that must refuse to start, and returns its stderr and exit
// status. If lb logs "listening" instead, the test fails at once and lb is killed, rather
// than at runDeadline.
func runRefused(t *testing.T, args ...string) (stderr string, status int) {
	t.Helper()
	return runRefusedWith(t, nil, nil, args...)
}

// runRefusedWith is runRefused with lb run by a wrapper command (such as noiouring) and
// extra env as KEY=VALUE.
func runRefusedWith(t *testing.T, wrapper, env []string, args ...string) (stderr string, status int) {
	t.Helper()
	argv := append(append(append([]string{}, wrapper...), lbBin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(lbEnv(), "LB_LOG_FORMAT=json"), env...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start lb: %v", err)
	}
	p := &lbProcess{cmd: cmd, log: newLogLines(), done: make(chan struct{})}
	go p.readAndWait(pipe)
	defer p.kill()
	if e, ok := p.log.waitFor(0, runDeadline, func(e logEntry) bool { return e.Message == "listening" }); ok {
		t.Fatalf("lb %s started: %s; want it refused before it listens", strings.Join(args, " "), e.raw)
	}
	select {
	case <-p.done: // its stderr has ended: lb exits
	case <-time.After(stopDeadline):
		t.Fatalf("lb %s still runs %v after its stderr ended; want it refused at once", strings.Join(args, " "), stopDeadline)
	}
	var exit *exec.ExitError
	switch {
	case p.err == nil:
	case errors.As(p.err, &exit):
		status = exit.ExitCode()
	default:
		t.Fatalf("lb %s: %v", strings.Join(args, " "), p.err)
	}
	return p.log.String(), status
}

// writeServersFile writes lines to a servers file in the test's temp dir.
func writeServersFile(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "servers.txt")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitAccepting polls addr until it accepts a TCP connection; alive reports an error when
// the process that should listen has died, which ends the wait at once.
func waitAccepting(addr string, within time.Duration, alive func() error) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if aerr := alive(); aerr != nil {
			return aerr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting after %v: %w", addr, within, err)
		}
		<-tick.C
	}
}
