package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"lb/internal/freeport"
)

// noIOUring builds lb/internal/noiouring beside lb, once: the wrapper that runs lb with
// io_uring_setup refused, as Docker's default seccomp profile refuses it.
var noIOUring = sync.OnceValues(func() (string, error) {
	path := filepath.Join(filepath.Dir(lbBin), "noiouring")
	if out, err := exec.Command("go", "build", "-o", path, "lb/internal/noiouring").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build lb/internal/noiouring: %v\n%s", err, out)
	}
	return path, nil
})

// withoutIOUring is the wrapper argv that runs a command with io_uring refused.
func withoutIOUring(t *testing.T) []string {
	t.Helper()
	path, err := noIOUring()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(path, "true").CombinedOutput(); err != nil {
		t.Fatalf("noiouring true: %v: %s", err, out)
	}
	return []string{path}
}

// A bad engine, as a flag, in LB_ENGINE or in lb.yaml, stops lb serve with exit status 2 and
// the allowed values (at the file's line and column for lb.yaml), before it listens.
func TestEngineBadValue(t *testing.T) {
	backend := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	servers := writeServersFile(t, backend)
	yaml := filepath.Join(t.TempDir(), "lb.yaml")
	if err := os.WriteFile(yaml, []byte("engine: bogus\nlisteners: [{listen: \"127.0.0.1:0\", routes: [{pool: web}]}]\npools: {web: {servers: ["+backend+"]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	serve := []string{"serve", "-f", servers, "--listen", "127.0.0.1:0"}
	const flagWant = "--engine bogus: want auto, epoll or uring"
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag", nil, append(serve, "--engine", "bogus"), flagWant},
		{"env", []string{"LB_ENGINE=bogus"}, serve, flagWant},
		{"lb.yaml", nil, []string{"serve", "--config", yaml}, yaml + `:1:9: bad engine "bogus": want auto, epoll or uring`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr, status := runRefusedWith(t, nil, tc.env, tc.args...)
			if status != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("lb %s (env %v): exit status %d, stderr %q; want 2 and %q", strings.Join(tc.args, " "), tc.env, status, stderr, tc.want)
			}
		})
	}
}

// Where io_uring is refused (Docker's default seccomp profile), --engine uring, or engine:
// uring in lb.yaml, stops lb with exit status 2 and l4's sentence saying what to do.
func TestEngineUringRefused(t *testing.T) {
	wrapper := withoutIOUring(t)
	backend := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	servers := writeServersFile(t, backend)
	yaml := filepath.Join(t.TempDir(), "lb.yaml")
	if err := os.WriteFile(yaml, []byte("engine: uring\nlisteners: [{listen: \"127.0.0.1:0\", routes: [{pool: web}]}]\npools: {web: {servers: ["+backend+"]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const sentence = "run with --engine epoll, or --engine auto to use io_uring where it is allowed"
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"serve", "-f", servers, "--listen", "127.0.0.1:0", "--engine", "uring"}, []string{"lb: io_uring is not available here (", sentence}},
		{[]string{"serve", "--config", yaml, "--engine", "epoll"}, []string{"lb: " + yaml + ": engine: uring: io_uring is not available here", "change it there"}},
	} {
		stderr, status := runRefusedWith(t, wrapper, nil, tc.args...)
		if status != 2 {
			t.Errorf("noiouring lb %s: exit status %d, want 2; stderr: %s", strings.Join(tc.args, " "), status, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("noiouring lb %s: stderr %q, want %q", strings.Join(tc.args, " "), stderr, w)
			}
		}
	}
}

// Where io_uring is refused, --engine auto runs on epoll: it serves, and says so.
func TestEngineAutoFallsBackToEpoll(t *testing.T) {
	serveWithEngine(t, withoutIOUring(t), nil, "epoll", "--engine", "auto")
}

// Where the kernel allows io_uring, lb runs on it by default (--engine auto).
func TestEngineAutoPicksUring(t *testing.T) {
	requireUring(t)
	// LB_ENGINE=auto is the default; set, it overrides the suite's own LB_ENGINE (.ci/run
	// runs e2e on epoll too).
	serveWithEngine(t, nil, []string{"LB_ENGINE=auto"}, "uring")
}

// serveWithEngine runs lb serve (under wrapper, with env) with args in front of an echo backend,
// checks that its listening line names engine and that a request goes through, and stops it.
func serveWithEngine(t *testing.T, wrapper, env []string, engine string, args ...string) {
	t.Helper()
	backend := startTCPBackend(t, echo)
	servers := writeServersFile(t, backend.Addr)
	lb := startLBWith(t, wrapper, env, append([]string{"serve", "-f", servers, "--listen", "127.0.0.1:0"}, args...)...)
	listening, _ := lb.log.waitFor(0, 0, func(e logEntry) bool { return e.Message == "listening" })
	if listening.Engine != engine {
		t.Errorf("listening line %s: engine %q, want %q", listening.raw, listening.Engine, engine)
	}
	c := dialLB(t, lb.Addr)
	if err := roundTrip(c, "GET / HTTP/1.1\r\nHost: e2e\r\n\r\n"); err != nil {
		t.Fatalf("through lb on %s: %v", engine, err)
	}
	c.Close()
	lb.stop(t)
}

// requireUring skips a test where this machine does not let lb use io_uring (auto is epoll).
func requireUring(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) != "0" {
		t.Skipf("kernel.io_uring_disabled is %s: this machine does not let lb use io_uring, so auto is epoll here", strings.TrimSpace(string(b)))
	}
	var params [120]byte // struct io_uring_params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno != 0 {
		t.Skipf("io_uring_setup: %v (a seccomp profile, or a kernel without io_uring): auto is epoll here", errno)
	}
	unix.Close(int(fd))
}
