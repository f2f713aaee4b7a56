package e2e

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// stickyClient makes a new connection per request (Connection: close) and keeps cookies.
func stickyClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(false)
	c.Jar = jar
	return c
}

// TestStickyCookie: lb inserts its cookie into nginx's responses; a browser-like client with
// a cookie jar stays on one backend over 50 new connections, one without rotates, and when
// its backend stops the client is moved and re-cookied with no failed request.
func TestStickyCookie(t *testing.T) {
	ngx := startNginx(t, 3)
	servers := writeServersFile(t, ngx[0].Addr+" id=one", ngx[1].Addr+" id=two", ngx[2].Addr+" id=three")
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--sticky-cookie", "lb_srv",
		"--health-interval", "50ms", "--health-timeout", "200ms", "--fall", "2", "--rise", "2")
	base := "http://" + lb.Addr + "/"
	u, _ := url.Parse(base)

	jarClient := stickyClient(t)
	first, err := backendOf(jarClient, base)
	if err != nil {
		t.Fatal(err)
	}
	cookies := jarClient.Jar.Cookies(u)
	if len(cookies) != 1 || cookies[0].Name != "lb_srv" || strings.Contains(cookies[0].Value, "127.0.0.1") {
		t.Fatalf("cookies after the first response: %v, want one lb_srv naming a backend id, not an address", cookies)
	}
	for i := range 50 {
		n, err := backendOf(jarClient, base)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if n != first {
			t.Fatalf("request %d with the cookie went to backend %d, want %d", i, n, first)
		}
	}

	plain := newClient(false)
	seen := map[int]bool{}
	for range 6 {
		n, err := backendOf(plain, base)
		if err != nil {
			t.Fatal(err)
		}
		seen[n] = true
	}
	if len(seen) != 3 {
		t.Fatalf("without cookies 6 connections reached backends %v, want all 3", seen)
	}

	// The sticky backend stops: requests go on without a failure, on another backend, and
	// the jar gets a new cookie naming it.
	ngx[first-1].stop(t)
	var moved int
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, err := backendOf(jarClient, base)
		if err != nil {
			t.Fatalf("request after the sticky backend stopped: %v", err)
		}
		if n != first {
			moved = n
			break
		}
	}
	if moved == 0 {
		t.Fatalf("the client still reached the stopped backend %d", first)
	}
	for i := range 10 {
		if n, err := backendOf(jarClient, base); err != nil || n != moved {
			t.Fatalf("request %d after the move: backend %d, %v; want %d", i, n, err, moved)
		}
	}
	if c := jarClient.Jar.Cookies(u); len(c) != 1 || c[0].Value == cookies[0].Value {
		t.Fatalf("cookie after the move: %v, want a new value", c)
	}
}
