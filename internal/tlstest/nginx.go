package tlstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"text/template"
	"time"

	"lb/internal/freeport"
)

// Nginx is an nginx process terminating TLS with a certificate on a loopback port. It
// answers every GET with "tls-backend-N sni=NAME alpn=PROTO\n" and an X-Backend: N header;
// ALPN offers h2 and http/1.1.
type Nginx struct {
	N    int
	Addr string // 127.0.0.1:PORT
	Cert Cert
	cmd  *exec.Cmd
	done chan struct{}
}

// nginxTemplate is testdata/nginx-tls-backend.conf.tmpl, found from this file, so that
// tests of any package can use it.
func nginxTemplate() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "nginx-tls-backend.conf.tmpl")
}

// StartNginx starts nginx backend n serving TLS with cert, returns once it accepts
// connections, and stops it when the test ends. Without nginx it skips the test (fails it
// under CI=true).
func StartNginx(t testing.TB, n int, cert Cert) *Nginx {
	t.Helper()
	bin := RequireTool(t, "nginx")
	tmpl, err := template.ParseFiles(nginxTemplate())
	if err != nil {
		t.Fatalf("nginx TLS template: %v", err)
	}
	prefix := t.TempDir()
	user := ""
	if os.Geteuid() == 0 {
		user = "root" // the worker, as nobody, could not enter the 0700 temp dir
	}
	ng := &Nginx{N: n, Addr: fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)), Cert: cert}
	_, port, _ := net.SplitHostPort(ng.Addr)
	conf := filepath.Join(prefix, "nginx.conf")
	f, err := os.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	err = tmpl.Execute(f, map[string]any{"Prefix": prefix, "Port": port, "N": n, "User": user, "CertFile": cert.CertFile, "KeyFile": cert.KeyFile})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("render nginx config: %v", err)
	}
	ng.cmd = exec.Command(bin, "-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "error.log"))
	ng.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a SIGKILL reaches the worker too
	if out, err := os.Create(filepath.Join(prefix, "stderr.log")); err == nil {
		ng.cmd.Stdout, ng.cmd.Stderr = out, out
		t.Cleanup(func() { out.Close() })
	}
	if err := ng.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	ng.done = make(chan struct{})
	go func() { ng.cmd.Wait(); close(ng.done) }()
	t.Cleanup(func() { ng.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", ng.Addr, time.Second)
		if err == nil {
			c.Close()
			return ng
		}
		select {
		case <-ng.done:
			log, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			errs, _ := os.ReadFile(filepath.Join(prefix, "stderr.log"))
			t.Fatalf("nginx exited: %v\n%s%s", ng.cmd.ProcessState, errs, log)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx on %s does not accept after 10s: %v", ng.Addr, err)
		}
	}
}

// stop shuts nginx down (SIGQUIT), or kills its process group after 10 s.
func (ng *Nginx) stop(t testing.TB) {
	ng.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-ng.done:
		return
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-ng.cmd.Process.Pid, syscall.SIGKILL)
	<-ng.done
	t.Errorf("nginx %d did not stop within 10s of SIGQUIT: killed", ng.N)
}

// RequireTool returns the path of a program a test runs, from PATH or /usr/sbin (where
// Debian puts nginx). Without it the test is skipped, or fails under CI=true.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p, err := exec.LookPath(filepath.Join("/usr/sbin", name)); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found on PATH or in /usr/sbin: install it (apt-get install %s) to run this test", name, name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: required)")
	}
	t.Skip(msg)
	return ""
}
