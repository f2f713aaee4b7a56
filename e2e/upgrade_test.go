package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lb/internal/freeport"
	"lb/internal/procstat"
)

// upgradable is an lb serve run from a copy of the binary the test may replace, with
// --pid-file, and its log in a file: the processes of an upgrade write to the same file,
// and the first one's exit does not wait for the next one's output as a pipe would.
type upgradable struct {
	bin, pidFile, logFile string
	first                 *exec.Cmd
	reaped                chan struct{} // closed once the first process is reaped
}

// startUpgradable copies lb to a temp dir and runs it there with args, a pid file and JSON
// logs; it waits until lb listens. Every process of the upgrade chain is killed when the
// test ends.
func startUpgradable(t *testing.T, args ...string) *upgradable {
	t.Helper()
	u := launchUpgradable(t, nil, args...)
	if !waitUntil(startDeadline, func() bool { return u.pid() == u.first.Process.Pid }) {
		t.Fatalf("lb wrote no pid file within %v", startDeadline)
	}
	// The pid file may be written a moment before the listening line.
	if !waitUntil(startDeadline, func() bool { return len(u.logged("listening")) > 0 }) {
		t.Fatalf("lb logged no listening line within %v", startDeadline)
	}
	return u
}

// launchUpgradable is startUpgradable with lb run by a wrapper command, without waiting
// for it to listen.
func launchUpgradable(t *testing.T, wrapper []string, args ...string) *upgradable {
	t.Helper()
	dir := t.TempDir()
	u := &upgradable{bin: filepath.Join(dir, "lb"), pidFile: filepath.Join(dir, "lb.pid"), logFile: filepath.Join(dir, "lb.log"), reaped: make(chan struct{})}
	u.install(t, lbBin)
	logf, err := os.Create(u.logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	argv := append(append(append(slices.Clone(wrapper), u.bin), args...), "--pid-file", u.pidFile)
	u.first = exec.Command(argv[0], argv[1:]...)
	u.first.Env = append(lbEnv(), "LB_LOG_FORMAT=json")
	u.first.Stderr, u.first.Stdout = logf, logf
	if err := u.first.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { u.first.Wait(); close(u.reaped) }()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(u.logFile)
			t.Logf("lb log:\n%s", b)
		}
		for _, pid := range u.pids() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		<-u.reaped
	})
	return u
}

// install puts the file at src in place of the binary, in one rename, as an operator's
// package manager does.
func (u *upgradable) install(t *testing.T, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := u.bin + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, u.bin); err != nil {
		t.Fatal(err)
	}
}

// pid is the pid in the pid file, 0 if none.
func (u *upgradable) pid() int {
	b, _ := os.ReadFile(u.pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// pids are the processes running this test's binary: the chain of upgrades.
func (u *upgradable) pids() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && strings.TrimSuffix(exe, " (deleted)") == u.bin && procstat.Running(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// freeAddr is a free loopback address with a port.
func freeAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)) }

// upgrade sends SIGUSR2 to the serving process and waits until another one serves (the pid
// file names it) and the old one has exited. It returns the new pid.
func (u *upgradable) upgrade(t *testing.T, within time.Duration) int {
	t.Helper()
	old := u.pid()
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	return u.awaitTakeover(t, old, within)
}

// awaitTakeover waits until a process other than old serves and old has exited.
func (u *upgradable) awaitTakeover(t *testing.T, old int, within time.Duration) int {
	t.Helper()
	if !waitUntil(within, func() bool { p := u.pid(); return p != 0 && p != old && !procstat.Running(old) }) {
		t.Fatalf("within %v of the upgrade: pid file %d (was %d), old process running: %v", within, u.pid(), old, procstat.Running(old))
	}
	return u.pid()
}

// logged counts the JSON log lines with this message.
func (u *upgradable) logged(message string) []map[string]any {
	b, _ := os.ReadFile(u.logFile)
	var out []map[string]any
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e map[string]any
		if json.Unmarshal(line, &e) == nil && e["message"] == message {
			out = append(out, e)
		}
	}
	return out
}

// Three upgrades in a row while clients open new connections and reuse kept-alive ones
// through lb to nginx: not one request fails and not one connection is refused, each
// upgrade ends with the old process gone and the pid file naming the new one, and the
// third, through lb upgrade, answers once the new process serves.
func TestUpgradeUnderLoad(t *testing.T) {
	slow(t, "three upgrades, each waiting for the old process to exit")
	ngx := startNginx(t, 2)
	servers := writeServersFile(t, ngx[0].Addr, ngx[1].Addr)
	admin := freeAddr(t)
	u := startUpgradable(t, "serve", "-f", servers, "--listen", freeAddr(t), "--admin-listen", admin, "--health-interval", "200ms", "--rise", "1")
	addr := u.logged("listening")[0]["listen"].(string)
	url := "http://" + addr + "/"
	var loops []*requestLoop
	for range 3 {
		loops = append(loops, startRequestLoop(url), startKeepAliveLoop(url))
	}
	finished := func() (n int) {
		for _, l := range loops {
			n += l.finished()
		}
		return n
	}
	defer func() {
		for _, l := range loops {
			l.stop()
		}
	}()
	seen := map[int]bool{u.pid(): true}
	for i := range 3 {
		before := finished()
		old := u.pid()
		if i < 2 {
			u.upgrade(t, 30*time.Second)
		} else {
			out, errOut, status := runLB(t, "upgrade", "--admin-listen", admin)
			if status != 0 || !strings.Contains(out, "upgraded") {
				t.Fatalf("lb upgrade: status %d, %s%s", status, out, errOut)
			}
			u.awaitTakeover(t, old, 30*time.Second)
		}
		if seen[u.pid()] {
			t.Fatalf("upgrade %d: pid %d served before", i+1, u.pid())
		}
		seen[u.pid()] = true
		// Requests flow through the new process before the next upgrade.
		if !waitUntil(10*time.Second, func() bool { return finished() > before+200 }) {
			t.Fatalf("upgrade %d: requests stopped", i+1)
		}
	}
	total, failed := 0, 0
	for _, l := range loops {
		l.stop()
		total += l.done
		if failed += len(l.errs); len(l.errs) > 0 {
			t.Errorf("%d of %d requests failed across 3 upgrades; first: %s", len(l.errs), l.done, l.errs[0])
		}
	}
	// The kept-alive connections moved rather than drained: each hand-over moved some.
	handovers := u.logged("connections handed over")
	moved := 0
	for _, h := range handovers {
		moved += int(h["moved"].(float64))
	}
	if len(handovers) != 3 || moved < 3 {
		t.Errorf("%d hand-overs moved %d connections; want 3 that moved the kept-alive ones", len(handovers), moved)
	}
	t.Logf("%d requests (3 loops of new connections, 3 of kept-alive ones) across 3 upgrades, %d failed; %d connections moved", total, failed, moved)
}

// A new binary that cannot start, or a configuration it refuses, leaves the old process
// serving and says why; the next upgrade, with a good binary, goes through.
func TestFailedUpgradeLeavesTheOldServing(t *testing.T) {
	ngx := startNginx(t, 1)
	servers := writeServersFile(t, ngx[0].Addr)
	u := startUpgradable(t, "serve", "-f", servers, "--listen", freeAddr(t))
	addr := u.logged("listening")[0]["listen"].(string)
	old := u.pid()
	broken := filepath.Join(t.TempDir(), "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'lb: cannot start' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	u.install(t, broken)
	syscall.Kill(old, syscall.SIGUSR2)
	if !waitUntil(startDeadline, func() bool { return len(u.logged("upgrade failed: serving on")) == 1 }) {
		t.Fatal("no \"upgrade failed\" line after a binary that exits at once")
	}
	if _, err := backendOf(newClient(false), "http://"+addr+"/"); err != nil || u.pid() != old || !procstat.Running(old) {
		t.Fatalf("after a failed upgrade: request %v, pid file %d (was %d), running %v", err, u.pid(), old, procstat.Running(old))
	}
	// A servers file the new process refuses: it exits 2, the old one serves on.
	u.install(t, lbBin)
	if err := os.WriteFile(servers, []byte("not an address\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(old, syscall.SIGUSR2)
	if !waitUntil(startDeadline, func() bool { return len(u.logged("upgrade failed: serving on")) == 2 }) {
		t.Fatal("no \"upgrade failed\" line after a new process that refuses its servers file")
	}
	if _, err := backendOf(newClient(false), "http://"+addr+"/"); err != nil || u.pid() != old {
		t.Fatalf("after a refused config: request %v, pid file %d (was %d)", err, u.pid(), old)
	}
	if err := os.WriteFile(servers, []byte(ngx[0].Addr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u.upgrade(t, 30*time.Second)
	if _, err := backendOf(newClient(false), "http://"+addr+"/"); err != nil {
		t.Fatalf("after a good upgrade: %v", err)
	}
}

// A long-lived connection moves to the new process: once the old one has exited, it
// carries 100 MiB each way, byte-exact, to an echo backend.
func TestUpgradeMovesALongLivedConnection(t *testing.T) {
	slow(t, "100 MiB through lb after an upgrade")
	b := startTCPBackend(t, func(c *net.TCPConn) { io.Copy(c, c); c.CloseWrite() })
	servers := writeServersFile(t, b.Addr)
	u := startUpgradable(t, "serve", "-f", servers, "--listen", freeAddr(t), "--drain-timeout", "2m")
	addr := u.logged("listening")[0]["listen"].(string)
	c := dialLB(t, addr)
	echoLine(t, c, "hello before the upgrade\n")
	// The old process exits within seconds, not after --drain-timeout: the connection moved.
	start := time.Now()
	u.upgrade(t, 20*time.Second)
	took := time.Since(start)
	u.movedOne(t)
	echoExactly(t, c, pattern(100<<20, 7))
	t.Logf("upgrade with one held connection: old process gone %v after SIGUSR2", took.Round(time.Millisecond))
}

// An upgrade is how the engine changes (a reload keeps the running one): lb.yaml says uring
// and a connection is held; the file then says epoll, and SIGUSR2 starts a process on epoll
// that takes the connection over from the io_uring one, which then echoes every byte.
func TestUpgradeChangesTheEngine(t *testing.T) {
	requireUring(t)
	b := startTCPBackend(t, func(c *net.TCPConn) { io.Copy(c, c); c.CloseWrite() })
	yaml, listen := filepath.Join(t.TempDir(), "lb.yaml"), freeAddr(t)
	write := func(engine string) {
		text := fmt.Sprintf("engine: %s\nlisteners: [{listen: %q, routes: [{pool: web}]}]\npools: {web: {servers: [%s]}}\n", engine, listen, b.Addr)
		if err := os.WriteFile(yaml, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("uring")
	u := startUpgradable(t, "serve", "--config", yaml, "--drain-timeout", "2m")
	if e := u.logged("listening")[0]["engine"]; e != "uring" {
		t.Fatalf("engine: uring in lb.yaml, listening on %v", e)
	}
	c := dialLB(t, listen)
	echoLine(t, c, "hello on uring\n")
	write("epoll")
	u.upgrade(t, 20*time.Second)
	if !waitUntil(5*time.Second, func() bool { return len(u.logged("listening")) == 2 }) {
		t.Fatalf("listening lines %v, want the new process's", u.logged("listening"))
	}
	if e := u.logged("listening")[1]["engine"]; e != "epoll" {
		t.Fatalf("after the upgrade with engine: epoll, the new process listens on %v", e)
	}
	u.movedOne(t)
	echoExactly(t, c, pattern(8<<20, 3))
}

// echoLine writes line on c, held open, and fails t unless an echo backend sends it back.
func echoLine(t *testing.T, c *net.TCPConn, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != line {
		t.Fatalf("echo before the upgrade: %q, %v", got, err)
	}
}

// echoExactly sends payload through c, then half-closes it, and fails t unless every byte
// comes back in order.
func echoExactly(t *testing.T, c *net.TCPConn, payload []byte) {
	t.Helper()
	back, err := echoThrough(c, payload)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(back) != sha256.Sum256(payload) {
		t.Fatalf("after the upgrade: %d bytes back of %d, first difference at %d", len(back), len(payload), firstDiff(back, payload))
	}
}

// movedOne fails t unless the old process logged one hand-over that moved one connection.
func (u *upgradable) movedOne(t *testing.T) {
	t.Helper()
	if moved := u.logged("connections handed over"); len(moved) != 1 || moved[0]["moved"] != 1.0 {
		t.Fatalf("hand-over lines %v, want one that moved 1 connection", moved)
	}
}
