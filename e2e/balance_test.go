package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newClient returns an HTTP client for lb; keepAlive false sends Connection: close and
// dials a new connection per request.
func newClient(keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: !keepAlive,
			MaxConnsPerHost:   1,
			Proxy:             nil,
		},
	}
}

// Each new connection goes to the next backend: 30 connections over 3 backends give 10
// each, in a fixed rotation. The listen address comes from LB_LISTEN, not a flag. One
// backend is given by host name (localhost), which lb resolves off its data path.
func TestRoundRobin(t *testing.T) {
	ngx := startNginx(t, 3)
	_, port, _ := net.SplitHostPort(ngx[1].Addr)
	servers := writeServersFile(t,
		"# three nginx backends, in the three spellings of an address",
		ngx[0].Addr,
		"http://localhost:"+port+"/   # the http:// form, with a host name",
		ngx[2].Addr+" weight=1 id=third",
	)
	lb := startLB(t, []string{"LB_LISTEN=127.0.0.1:0"}, "serve", "-f", servers)
	client := newClient(false)
	var seq []int
	counts := map[int]int{}
	for i := range 30 {
		n, err := backendOf(client, "http://"+lb.Addr+"/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		seq = append(seq, n)
		counts[n]++
	}
	for n := 1; n <= 3; n++ {
		if counts[n] != 10 {
			t.Errorf("backend %d got %d of 30 requests, want 10; sequence %v", n, counts[n], seq)
		}
	}
	for i := 3; i < len(seq); i++ {
		if seq[i] != seq[i%3] {
			t.Errorf("request %d went to backend %d, want %d: not a rotation; sequence %v", i, seq[i], seq[i%3], seq)
			break
		}
	}
	lb.stop(t)
}

// requestLoop sends GET / through lb on a new connection each, paced, until stopped, and
// records who answered or what failed.
type requestLoop struct {
	mu       sync.Mutex
	answers  []int    // backend per successful request, in order
	errs     []string // failed requests
	done     int      // requests finished, failed or not
	stopOnce sync.Once
	stopped  chan struct{}
	exited   chan struct{}
}

func startRequestLoop(url string) *requestLoop { return startLoop(url, false) }

// startKeepAliveLoop is startRequestLoop over one kept-alive connection (a new one only
// when lb or the backend closed it).
func startKeepAliveLoop(url string) *requestLoop { return startLoop(url, true) }

func startLoop(url string, keepAlive bool) *requestLoop {
	l := &requestLoop{stopped: make(chan struct{}), exited: make(chan struct{})}
	go l.run(url, newClient(keepAlive))
	return l
}

func (l *requestLoop) run(url string, client *http.Client) {
	defer close(l.exited)
	pace := time.NewTicker(5 * time.Millisecond) // at most 200 connections a second
	defer pace.Stop()
	for i := 0; ; i++ {
		select {
		case <-l.stopped:
			return
		case <-pace.C:
		}
		start := time.Now()
		n, err := backendOf(client, url)
		l.mu.Lock()
		if err != nil {
			l.errs = append(l.errs, fmt.Sprintf("request %d at %s (took %v): %v", i, start.Format("15:04:05.000"), time.Since(start).Round(time.Millisecond), err))
		} else {
			l.answers = append(l.answers, n)
		}
		l.done++
		l.mu.Unlock()
	}
}

// stop ends the loop and waits for it; it may be called more than once.
func (l *requestLoop) stop() {
	l.stopOnce.Do(func() { close(l.stopped) })
	<-l.exited
}

// finished is how many requests have ended so far.
func (l *requestLoop) finished() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// waitUntil polls cond every 5 ms until it holds or within passes.
func waitUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// A backend stopped under load costs no client request: lb retries a failed dial on the
// next backend, takes the dead one out after --fall probes, and brings it back after
// --rise probes once it listens again on the same port.
func TestFailover(t *testing.T) {
	slow(t, "a request loop across a backend's fall and rise")
	ngx := startNginx(t, 3)
	servers := writeServersFile(t, ngx[0].Addr+" id=one", ngx[1].Addr+" id=two", ngx[2].Addr+" id=three")
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--log-level", "debug",
		"--health-interval", "50ms", "--health-timeout", "200ms", "--fall", "2", "--rise", "2")
	loop := startRequestLoop("http://" + lb.Addr + "/")
	defer loop.stop()

	answered := func(backend, from int) func() bool {
		return func() bool {
			loop.mu.Lock()
			defer loop.mu.Unlock()
			for _, n := range loop.answers[min(from, len(loop.answers)):] {
				if n == backend {
					return true
				}
			}
			return false
		}
	}
	for n := 1; n <= 3; n++ {
		if !waitUntil(5*time.Second, answered(n, 0)) {
			t.Fatalf("backend %d never answered before the failover", n)
		}
	}

	mark := lb.log.len()
	ngx[1].stop(t)
	down, ok := lb.log.waitFor(mark, 5*time.Second, func(e logEntry) bool { return e.Message == "backend down" && e.ID == "two" })
	if !ok {
		t.Fatalf("lb did not log \"backend down\" for backend 2 (id two) within 5s of stopping it")
	}
	// Let the loop run well past the fall: lb must not dial backend 2 any more.
	afterDown := loop.finished()
	if !waitUntil(10*time.Second, func() bool { return loop.finished() >= afterDown+30 }) {
		t.Fatalf("request loop stalled after the fall: %d requests", loop.finished()-afterDown)
	}
	loop.mu.Lock()
	answersBeforeRestart := len(loop.answers)
	loop.mu.Unlock()

	ngx[1].start(t)
	up, ok := lb.log.waitFor(mark, 5*time.Second, func(e logEntry) bool { return e.Message == "backend up" && e.ID == "two" })
	if !ok {
		t.Fatalf("lb did not log \"backend up\" for backend 2 within 5s of restarting it on %s", ngx[1].Addr)
	}
	if !waitUntil(5*time.Second, answered(2, answersBeforeRestart)) {
		t.Fatalf("backend 2 is up again (%s) but no request reached it within 5s", up.raw)
	}
	loop.stop()

	// A dial that picked backend 2 just before it went down may fail after the log line;
	// more than one such dial means lb kept using a backend it had taken out.
	var lateDials []string
	for _, e := range lb.log.entries(mark) {
		if e.raw == down.raw {
			lateDials = lateDials[:0]
			continue
		}
		if e.Message == "dial failed, trying the next backend" && e.Backend == "two" {
			lateDials = append(lateDials, e.raw)
		}
	}
	if len(lateDials) > 1 {
		t.Errorf("lb dialed backend 2 %d times after taking it down:\n%s", len(lateDials), lateDials)
	}
	loop.mu.Lock()
	defer loop.mu.Unlock()
	if len(loop.errs) > 0 {
		t.Errorf("%d of %d client requests failed during the failover (want 0):\n%s", len(loop.errs), loop.done, loop.errs)
	}
	t.Logf("%d requests, %d failed; fall: %s", loop.done, len(loop.errs), down.raw)
	lb.stop(t)
}

// All requests on one keep-alive connection reach the backend the connection was routed
// to; Connection: close requests work too.
func TestKeepAlive(t *testing.T) {
	ngx := startNginx(t, 3)
	servers := writeServersFile(t, ngx[0].Addr, ngx[1].Addr, ngx[2].Addr)
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0")

	var dials atomic.Int32
	client := newClient(true)
	client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	seen := map[int]int{}
	for i := range 20 {
		n, err := backendOf(client, "http://"+lb.Addr+"/")
		if err != nil {
			t.Fatalf("keep-alive request %d: %v", i, err)
		}
		seen[n]++
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("20 keep-alive requests took %d connections, want 1", d)
	}
	if len(seen) != 1 {
		t.Errorf("one keep-alive connection reached several backends: %v", seen)
	}
	client.CloseIdleConnections()

	closing := newClient(false)
	seen = map[int]int{}
	for i := range 6 {
		n, err := backendOf(closing, "http://"+lb.Addr+"/")
		if err != nil {
			t.Fatalf("Connection: close request %d: %v", i, err)
		}
		seen[n]++
	}
	if len(seen) != 3 {
		t.Errorf("6 Connection: close requests reached backends %v, want all 3", seen)
	}
	lb.stop(t)
}

// 10 MiB go up (PUT) and come back down (GET) through lb byte for byte.
func TestLargeBody(t *testing.T) {
	slow(t, "10 MiB each way")
	ngx := startNginx(t, 1)
	servers := writeServersFile(t, ngx[0].Addr)
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0")
	data := make([]byte, 10<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	url := "http://" + lb.Addr + "/files/big"
	client := newClient(false)

	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("PUT 10 MiB: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT 10 MiB: %s: %q", resp.Status, body)
	}
	stored, err := os.ReadFile(ngx[0].stored("big"))
	if err != nil {
		t.Fatalf("nginx did not store the file: %v", err)
	}
	if got := sha256.Sum256(stored); got != want {
		t.Errorf("nginx stored %d bytes with sha256 %x, sent %d bytes with sha256 %x", len(stored), got, len(data), want)
	}

	resp, err = client.Get(url)
	if err != nil {
		t.Fatalf("GET 10 MiB: %v", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET 10 MiB: %s, %d bytes, %v", resp.Status, n, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("GET returned %d bytes with sha256 %x, want %d bytes with sha256 %x", n, got, len(data), want)
	}
	lb.stop(t)
}
