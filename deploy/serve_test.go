package deploy

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// served is lb run by a test as a shipped file runs it, with what it logged.
type served struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []string
	done chan struct{}
}

// serve starts lbBin with args and only env (and PATH), as a unit or an image gives a
// process a clean environment, and returns once it logs that it listens; the test stops it
// (SIGTERM) when it ends.
func serve(t *testing.T, args, env []string) *served {
	t.Helper()
	s := start(t, append([]string{lbBin}, args...), env)
	if !s.waitLog(0, "listening") {
		t.Fatalf("lb %s did not start listening:\n%s", strings.Join(args, " "), s.all())
	}
	return s
}

// start runs argv (lb, or a command that runs lb) as serve does, without waiting for lb to
// listen.
func start(t *testing.T, argv, env []string) *served {
	t.Helper()
	s := &served{cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	s.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.mu.Lock()
			s.logs = append(s.logs, sc.Text())
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		s.cmd.Wait()
	})
	return s
}

// mark is how many lines lb has logged, for waitLog.
func (s *served) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.logs)
}

// waitLog waits up to 15 s for a line after the first from lines that contains text.
func (s *served) waitLog(from int, text string) bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, l := range s.logs[min(from, len(s.logs)):] {
			if strings.Contains(l, text) {
				s.mu.Unlock()
				return true
			}
		}
		s.mu.Unlock()
		select {
		case <-s.done:
			return false
		case <-time.After(10 * time.Millisecond): // polling the log, bounded by the deadline
		}
	}
	return false
}

func (s *served) all() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.logs, "\n")
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// httpBackend serves "ok" to GET /health and any other request, on loopback, until the
// test ends.
func httpBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				for ctx.Err() == nil {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
					}
				}
			})
		}
	})
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// get makes one HTTP/1.1 request to addr and returns the status line.
func get(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}
