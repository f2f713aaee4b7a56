package app

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"lb/internal/freeport"
	"lb/internal/logtest"
)

func TestSameAddr(t *testing.T) {
	for _, c := range []struct {
		want, got string
		same      bool
	}{
		{":7777", "[::]:7777", true},
		{":7777", "0.0.0.0:7777", true},
		{"0.0.0.0:7777", "[::]:7777", true},
		{"[::]:7777", "0.0.0.0:7777", true},
		{"127.0.0.1:7777", "127.0.0.1:7777", true},
		{"localhost:7777", "127.0.0.1:7777", true},
		{"localhost:7777", "[::1]:7777", true},
		{"[::1]:7777", "[::1]:7777", true},
		{":7777", "[::]:7778", false},
		{":7777", "127.0.0.1:7777", false},
		{"127.0.0.1:7777", "[::]:7777", false},
		{"127.0.0.1:7777", "127.0.0.2:7777", false},
		{"localhost:7777", "[::]:7777", false},
		{"example.com:7777", "[::]:7777", false},
	} {
		if got := sameAddr("tcp", c.want, c.got); got != c.same {
			t.Errorf("sameAddr(%q, %q) = %v, want %v", c.want, c.got, got, c.same)
		}
	}
}

// inherited listens on a free loopback port, as a socket systemd would pass under name.
func inherited(t *testing.T, name string) socket {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return socket{name: name, ln: ln}
}

// A socket goes to the listener of its name, else to the one of its address, once; a
// socket no listener takes is closed with a warning that names it.
func TestActivatedMatchesByNameThenAddress(t *testing.T) {
	web, admin, stray := inherited(t, "web"), inherited(t, "admin"), inherited(t, "stray")
	a := &Activated{socks: []socket{web, admin, stray}, unused: []string{"udp"}}
	if s := a.take("admin", "tcp", web.ln.Addr().String()); s == nil || s.ln != admin.ln {
		t.Fatalf("the admin listener took %v, want the socket named admin before the one of its address", s)
	}
	if s := a.take("", "tcp", web.ln.Addr().String()); s == nil || s.ln != web.ln {
		t.Fatalf("the listener on %s took %v, want the socket of that address", web.ln.Addr(), s)
	}
	if s := a.take("", "tcp", web.ln.Addr().String()); s != nil {
		t.Fatalf("a socket was taken twice")
	}
	if s := a.take("metrics", "unix", "/run/lb/metrics.sock"); s != nil {
		t.Fatalf("the metrics listener took %s, which neither its name nor its address names", s.name)
	}
	logs, log := logtest.New()
	a.closeRest(log)
	warn := logs.Await(t, "systemd passed a socket that no listener matches (by address, or by the name admin or metrics): closed it; make lb.socket's ListenStream= and lb's listen addresses agree", time.Second)
	if warn["fd_name"] != "stray" || warn["addr"] != stray.ln.Addr().String() {
		t.Errorf("warning %v, want fd_name stray and addr %s", warn, stray.ln.Addr())
	}
	logs.Await(t, "systemd passed a socket that is not a listening stream socket: lb serves TCP and Unix stream sockets only; closed it", time.Second)
	if _, err := stray.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the unmatched socket accepts (%v), want it closed", err)
	}
}

// Start serves on the socket systemd passed for its listen address instead of binding
// (which would fail: the address is in use), and says so.
func TestStartServesOnTheActivatedSocket(t *testing.T) {
	s := inherited(t, "lb.socket")
	servers := filepath.Join(t.TempDir(), "servers.txt")
	write(t, servers, "127.0.0.1:1 id=a\n")
	a, logs := startWith(t, Source{ServersFile: servers, Listen: s.ln.Addr().String()}, func(o *Options) {
		o.Activated = &Activated{socks: []socket{s}}
	})
	if len(a.lns) != 1 || a.lns[0] != s.ln {
		t.Fatalf("lb listens on %v, want the activated socket %v", a.lns, s.ln.Addr())
	}
	line := logs.Await(t, "listening on the socket systemd passed", time.Second)
	if line["fd_name"] != "lb.socket" || line["listen"] != s.ln.Addr().String() {
		t.Errorf("log line %v, want fd_name lb.socket and listen %s", line, s.ln.Addr())
	}
	c, err := net.DialTimeout("tcp", s.ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatalf("connect to the activated socket: %v", err)
	}
	c.Close()
}

// A listener of lb.yaml with a name takes systemd's socket of that name, whatever its
// address: FileDescriptorName= is how a unit says which socket is which.
func TestConfigListenerTakesTheSocketOfItsName(t *testing.T) {
	s := inherited(t, "web")
	dir := t.TempDir()
	path := filepath.Join(dir, "lb.yaml")
	write(t, path, fmt.Sprintf("listeners:\n  - listen: 127.0.0.1:%d\n    name: web\n    routes: [{pool: p}]\npools:\n  p: {servers: [127.0.0.1:1]}\n", freeport.Get(t)))
	a, _ := startWith(t, Source{ConfigFile: path}, func(o *Options) {
		o.Activated = &Activated{socks: []socket{s}}
	})
	if len(a.lns) != 1 || a.lns[0] != s.ln {
		t.Fatalf("the listener named web listens on %v, want systemd's socket named web at %v", a.lns[0].Addr(), s.ln.Addr())
	}
}
