package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/sys/unix"
)

// proc is a server process the soak starts, kills and starts again on the same port.
type proc struct {
	name string
	addr string // 127.0.0.1:PORT it serves on
	argv func() []string
	dir  string // its working directory: config, logs

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs the process and waits until its port accepts connections.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	argv := p.argv()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = p.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a kill reaches nginx's worker and socat's children
	logf, err := os.OpenFile(filepath.Join(p.dir, "out.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			// The work directory is gone once the soak fails: say here why it exited.
			out, _ := os.ReadFile(filepath.Join(p.dir, "out.log"))
			return fmt.Errorf("%s exited at start (%s); the end of its log:\n%s", p.name, cmd.ProcessState, tail(out, 2000))
		default:
		}
		if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling a port that is not yet bound
	}
	return fmt.Errorf("%s not accepting on %s within 10s", p.name, p.addr)
}

// kill ends the process group with SIGKILL and waits for it.
func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// alive reports whether the process still runs.
func (p *proc) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stopGently sends sig and waits up to d for the exit, then kills.
func (p *proc) stopGently(sig syscall.Signal, d time.Duration) (exitedInTime bool, state *os.ProcessState) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true, nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
		return true, cmd.ProcessState
	case <-time.After(d):
		p.kill()
		return false, cmd.ProcessState
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// newProc makes a proc on a free port; argv gets the port.
func newProc(root, name string, argv func(port int) []string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &proc{name: name, addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, argv: func() []string { return argv(port) }}, nil
}

// nginxProc renders the e2e tests' nginx backend config for backend n.
func nginxProc(root, repo string, n int) (*proc, error) {
	bin, err := lookTool("nginx")
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("nginx-%d", n)
	p, err := newProc(root, name, func(int) []string { return nil })
	if err != nil {
		return nil, err
	}
	tmpl, err := template.ParseFiles(filepath.Join(repo, "testdata", "nginx-backend.conf.tmpl"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(p.dir, "html", "files"), 0o755); err != nil {
		return nil, err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "root" // the worker must enter the temp dir
	}
	_, port, _ := net.SplitHostPort(p.addr)
	f, err := os.Create(filepath.Join(p.dir, "nginx.conf"))
	if err != nil {
		return nil, err
	}
	err = tmpl.Execute(f, map[string]any{"Prefix": p.dir, "Port": port, "N": n, "User": user})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	p.argv = func() []string {
		return []string{bin, "-p", p.dir, "-c", filepath.Join(p.dir, "nginx.conf"), "-e", filepath.Join(p.dir, "error.log")}
	}
	return p, err
}

// socatEcho is an echo server: a cat per connection. -t 30: after one direction's EOF, socat
// waits for the other instead of cutting it after half a second.
func socatEcho(root string, n int) (*proc, error) {
	bin, err := lookTool("socat")
	if err != nil {
		return nil, err
	}
	return newProc(root, fmt.Sprintf("echo-%d", n), func(port int) []string {
		return []string{bin, "-t", "30", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port), "EXEC:cat"}
	})
}

func redisProc(root string) (*proc, error) {
	bin, err := lookTool("redis-server")
	if err != nil {
		return nil, err
	}
	return newProc(root, "redis", func(port int) []string {
		return []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
	})
}

// lbProc runs `lb serve` with the servers file of backends and extra flags.
func lbProc(root, bin, name string, backends []*proc, flags ...string) (*proc, error) {
	p, err := newProc(root, name, func(int) []string { return nil })
	if err != nil {
		return nil, err
	}
	var sb strings.Builder
	for i, b := range backends {
		fmt.Fprintf(&sb, "%s id=%s-%d\n", b.addr, name, i+1)
	}
	servers := filepath.Join(p.dir, "servers.txt")
	if err := os.WriteFile(servers, []byte(sb.String()), 0o644); err != nil {
		return nil, err
	}
	p.argv = func() []string {
		return append([]string{bin, "serve", "-f", servers, "--listen", p.addr, "--log-format", "json",
			"--health-interval", "1s", "--rise", "2", "--fall", "3", "--drain-timeout", "5s"}, flags...)
	}
	return p, nil
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if p := filepath.Join("/usr/sbin", name); fileExists(p) {
		return p, nil
	}
	return "", fmt.Errorf("%s not found: apt-get install %s", name, name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// usage is what /proc says of a process (open descriptors, threads, resident memory) and,
// for lb, its goroutines.
type usage struct {
	fds, threads int
	rssKB        int
	goroutines   int
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, %d goroutines, %d threads, %.1f MB RSS", u.fds, u.goroutines, u.threads, float64(u.rssKB)/1024)
}

// goroutinesOf asks lb for its counters (SIGUSR1) and reads the goroutines from the line it
// logs to its out.log.
func goroutinesOf(p *proc) (int, error) {
	log := filepath.Join(p.dir, "out.log")
	seen := func() (int, int) {
		b, _ := os.ReadFile(log)
		n, last := 0, -1
		for _, line := range strings.Split(string(b), "\n") {
			var e struct {
				Message    string `json:"message"`
				Goroutines int    `json:"goroutines"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && e.Message == "counters" {
				n, last = n+1, e.Goroutines
			}
		}
		return n, last
	}
	before, _ := seen()
	if err := syscall.Kill(p.pid(), syscall.SIGUSR1); err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if n, g := seen(); n > before {
			return g, nil
		}
		time.Sleep(20 * time.Millisecond) // polling lb's log
	}
	return 0, fmt.Errorf("%s logged no counters within 5 s of SIGUSR1", p.name)
}

func usageOf(pid int) (usage, error) {
	var u usage
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.fds = len(ents)
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "Threads":
			u.threads, _ = strconv.Atoi(fields[0])
		case "VmRSS":
			u.rssKB, _ = strconv.Atoi(fields[0])
		}
	}
	return u, sc.Err()
}

// setNofile sets the soft open-files limit of a running process (the hard one is kept, so
// no privilege is needed to raise it again).
func setNofile(pid int, soft uint64) error {
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		return err
	}
	return unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: min(soft, old.Max), Max: old.Max}, nil)
}

// nofile is a process's hard open-files limit.
func nofile(pid int) (uint64, error) {
	var old unix.Rlimit
	err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old)
	return old.Max, err
}

// tail is the last n bytes of b.
func tail(b []byte, n int) []byte { return b[max(0, len(b)-n):] }
