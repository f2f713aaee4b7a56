package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"lb/internal/freeport"
)

// nginxBackend is one nginx process (master and one worker) serving backend N on a fixed
// loopback port: "backend-N\n" with X-Backend: N at /, and PUT/GET under /files/.
type nginxBackend struct {
	N    int
	Addr string // 127.0.0.1:PORT
	// ProxyAddr, from startNginxWith, takes PROXY protocol and answers /health with 200.
	ProxyAddr string
	bin       string
	prefix    string // temp dir with the config, logs, pid and the document root
	cmd       *exec.Cmd
	done      chan struct{} // closed when cmd has exited
}

// nginxTemplate is the config every nginx backend is rendered from.
const nginxTemplate = "../testdata/nginx-backend.conf.tmpl"

// startNginx starts n nginx backends, numbered 1..n, and stops them when the test ends.
func startNginx(t *testing.T, n int) []*nginxBackend {
	t.Helper()
	return startNginxWith(t, n, false)
}

// startNginxWith is startNginx; with proxy, each backend also listens on ProxyAddr with
// proxy_protocol.
func startNginxWith(t *testing.T, n int, proxy bool) []*nginxBackend {
	t.Helper()
	bin := requireTool(t, "nginx")
	tmpl, err := template.ParseFiles(nginxTemplate)
	if err != nil {
		t.Fatalf("nginx config template: %v", err)
	}
	user := ""
	if os.Geteuid() == 0 {
		// As root, nginx would run its worker as nobody, which cannot enter the 0700 temp
		// dir that holds the document root.
		user = "root"
	}
	backends := make([]*nginxBackend, n)
	for i := range backends {
		prefix := t.TempDir()
		b := &nginxBackend{N: i + 1, Addr: fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)), bin: bin, prefix: prefix}
		if err := os.MkdirAll(filepath.Join(prefix, "html", "files"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(b.Addr)
		proxyPort := 0
		if proxy {
			proxyPort = freeport.Get(t)
			b.ProxyAddr = fmt.Sprintf("127.0.0.1:%d", proxyPort)
		}
		f, err := os.Create(b.conf())
		if err != nil {
			t.Fatal(err)
		}
		err = tmpl.Execute(f, map[string]any{"Prefix": prefix, "Port": port, "N": b.N, "User": user, "ProxyPort": proxyPort})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("render nginx config: %v", err)
		}
		t.Cleanup(func() { b.stop(t) })
		b.start(t)
		backends[i] = b
	}
	return backends
}

func (b *nginxBackend) conf() string { return filepath.Join(b.prefix, "nginx.conf") }

// start runs nginx on b.Addr and returns once the port accepts connections.
func (b *nginxBackend) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(b.bin, "-p", b.prefix, "-c", b.conf(), "-e", filepath.Join(b.prefix, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so a SIGKILL reaches the worker too
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx %d: %v", b.N, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.cmd, b.done = cmd, done
	err := waitAccepting(b.Addr, startDeadline, func() error {
		select {
		case <-done:
			return fmt.Errorf("nginx %d exited: %v: %s", b.N, cmd.ProcessState, out.String())
		default:
			return nil
		}
	})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(b.prefix, "error.log"))
		t.Fatalf("nginx backend %d: %v\nerror.log:\n%s", b.N, err, log)
	}
}

// stop shuts nginx down gracefully (SIGQUIT), or kills its process group after a deadline.
// Stopping a stopped backend does nothing.
func (b *nginxBackend) stop(t *testing.T) {
	t.Helper()
	if b.cmd == nil {
		return
	}
	defer func() { b.cmd = nil }()
	b.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-b.done:
		return
	case <-time.After(stopDeadline):
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	<-b.done
	t.Errorf("nginx backend %d did not stop within %v of SIGQUIT: killed", b.N, stopDeadline)
}

// stored is the path where nginx keeps a file PUT at /files/name.
func (b *nginxBackend) stored(name string) string {
	return filepath.Join(b.prefix, "html", "files", name)
}

// lockedBuffer is an io.Writer safe for a process's output and a reader at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

// backendOf gets url with client and returns which nginx backend answered; it checks that
// the body and the X-Backend header agree.
func backendOf(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("GET %s: reading the body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s: %q", url, resp.Status, body)
	}
	n, err := strconv.Atoi(resp.Header.Get("X-Backend"))
	if err != nil || string(body) != fmt.Sprintf("backend-%d\n", n) {
		return 0, fmt.Errorf("GET %s: X-Backend %q with body %q", url, resp.Header.Get("X-Backend"), body)
	}
	return n, nil
}

// tcpBackend is a Go TCP server on loopback that runs handle for each connection. The test
// owns it: cleanup closes the listener and every open connection and waits for the handlers.
type tcpBackend struct {
	Addr  string
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startTCPBackend(t *testing.T, handle func(*net.TCPConn)) *tcpBackend {
	t.Helper()
	return startTCPBackendOn(t, "127.0.0.1:0", handle)
}

// startTCPBackendOn is startTCPBackend listening on addr: a fixed port ("127.0.0.1:PORT",
// for a backend lb knows before it listens) or another loopback ("[::1]:0").
func startTCPBackendOn(t *testing.T, addr string, handle func(*net.TCPConn)) *tcpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBackend{Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.acceptLoop(handle)
	t.Cleanup(b.close)
	return b
}

func (b *tcpBackend) acceptLoop(handle func(*net.TCPConn)) {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return // closed by close; loopback accepts do not fail otherwise
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serveConn(c.(*net.TCPConn), handle)
	}
}

func (b *tcpBackend) serveConn(c *net.TCPConn, handle func(*net.TCPConn)) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	handle(c)
}

// closeListener stops accepting: new connections to Addr are refused.
func (b *tcpBackend) closeListener() { b.ln.Close() }

func (b *tcpBackend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// echo writes back everything it reads and shuts its write side at the client's EOF.
func echo(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(startDeadline))
	if _, err := io.Copy(c, c); err == nil {
		c.CloseWrite()
	}
}

// errReadAll is io.ReadAll that names what failed.
func errReadAll(what string, r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return b, fmt.Errorf("%s after %d bytes: %w", what, len(b), err)
	}
	return b, nil
}

// echoThrough writes sent to c and half-closes it, on a goroutine of its own, while it reads
// back everything until the EOF: what an echo backend sent back, and the first error of the
// write or the read.
func echoThrough(c *net.TCPConn, sent []byte) ([]byte, error) {
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(sent)
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	got, err := errReadAll("read the echo", c)
	if werr := <-wrote; werr != nil {
		return got, fmt.Errorf("write: %w", werr)
	}
	return got, err
}

// isRefused reports whether err is a refused TCP connection.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
