// Package redistest runs a real redis-server for tests: on a free loopback port, in the
// test's temp dir, without persistence, stopped when the test ends.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lb/internal/freeport"
)

// startDeadline bounds the wait for a started redis-server to answer PING.
const startDeadline = 5 * time.Second

// Server is a redis-server process of the test's own. Its methods fail the test on errors.
type Server struct {
	t       testing.TB
	bin     string
	port    int
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	stopped bool
}

// Start starts a redis-server for the test and stops it at the end of the test. It skips the
// test when redis-server is not installed, unless CI=true, where it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found and CI=true: install it (apt-get install redis-server): %v", err)
		}
		t.Skipf("redis-server not found on PATH: install it (apt-get install redis-server) to run this test (%v)", err)
	}
	r := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(r.Stop)
	// A port found free can be taken before redis-server binds it: try a few.
	for range 3 {
		r.port = freeport.Get(t)
		if r.start() {
			return r
		}
	}
	t.Fatalf("redis-server did not start; its log:\n%s", r.Log())
	return nil
}

// start runs redis-server on r.port and reports whether it answers PING in time.
func (r *Server) start() bool {
	r.t.Helper()
	logf, err := os.OpenFile(filepath.Join(r.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	// A test process killed before its cleanup (a timed-out mutant, a ^C) takes its
	// redis-server with it.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.exited, r.stopped = make(chan struct{}), false
	go waitExit(r.cmd, r.exited)
	deadline := time.Now().Add(startDeadline)
	for time.Now().Before(deadline) {
		select {
		case <-r.exited:
			return false // port taken, most likely
		default:
		}
		if r.ping() == nil {
			return true
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	r.Stop()
	return false
}

func waitExit(cmd *exec.Cmd, exited chan struct{}) {
	cmd.Wait()
	close(exited)
}

// ping sends PING on a fresh connection and checks the answer.
func (r *Server) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop kills redis-server and waits for it; safe to call when it is already stopped.
func (r *Server) Stop() {
	if r.cmd == nil || r.stopped {
		return
	}
	r.stopped = true
	r.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once continued
	r.cmd.Process.Kill()
	<-r.exited
}

// Restart starts redis-server again on the same port, empty.
func (r *Server) Restart() {
	r.t.Helper()
	r.Stop()
	if !r.start() {
		r.t.Fatalf("redis-server did not restart on port %d; its log:\n%s", r.port, r.Log())
	}
}

// Signal sends sig to redis-server: SIGSTOP freezes it, SIGCONT lets it go on.
func (r *Server) Signal(sig syscall.Signal) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatal(err)
	}
}

// Addr is the server's host:port on loopback.
func (r *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is the server's redis:// URL, database 0.
func (r *Server) URL() string { return "redis://" + r.Addr() + "/0" }

// Log returns what redis-server has logged.
func (r *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return string(b)
}

// Do sends one command on a fresh connection and returns the first line of the answer (the
// content, for a bulk string): a look at Redis that goes around the code under test.
func (r *Server) Do(args ...string) string {
	r.t.Helper()
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	cmd := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		cmd += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		r.t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		r.t.Fatal(err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" { // a bulk string: return its content
		line, err = br.ReadString('\n')
		if err != nil {
			r.t.Fatal(err)
		}
		line = strings.TrimSuffix(line, "\r\n")
	}
	return line
}
