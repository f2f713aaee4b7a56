package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"lb/internal/dnstest"
	"lb/internal/freeport"
	"lb/serversfile"
)

// nameLoop asks lb for the name of a backend on a new connection every 5 ms until stopped,
// and keeps every answer and every error.
type nameLoop struct {
	url     string
	stopped chan struct{}
	exited  chan struct{}

	mu    sync.Mutex
	names []string
	errs  []string
}

func startNameLoop(url string) *nameLoop {
	l := &nameLoop{url: url, stopped: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(l.exited)
		client := newClient(false)
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for {
			select {
			case <-l.stopped:
				return
			case <-pace.C:
			}
			name, err := nameOf(client, url)
			l.mu.Lock()
			if err != nil {
				l.errs = append(l.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			} else {
				l.names = append(l.names, name)
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *nameLoop) stop() {
	select {
	case <-l.stopped:
	default:
		close(l.stopped)
	}
	<-l.exited
}

// mark returns how many answers came so far: since(mark) reads the answers after it.
func (l *nameLoop) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.names)
}

// since counts the answers after mark by backend name.
func (l *nameLoop) since(mark int) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]int{}
	for _, n := range l.names[mark:] {
		seen[n]++
	}
	return seen
}

// waitServed waits until the loop has had an answer from name after mark.
func (l *nameLoop) waitServed(t *testing.T, mark int, name string) {
	t.Helper()
	if !waitUntil(runDeadline, func() bool { return l.since(mark)[name] > 0 }) {
		t.Fatalf("no answer from %s within %v; answers since: %v", name, runDeadline, l.since(mark))
	}
}

// waitQuiet waits until n answers in a row, after mark, came from none of names.
func (l *nameLoop) waitQuiet(t *testing.T, mark, n int, names ...string) {
	t.Helper()
	ok := waitUntil(runDeadline, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		run := 0
		for _, got := range l.names[mark:] {
			run++
			for _, name := range names {
				if got == name {
					run = 0
				}
			}
		}
		return run >= n
	})
	if !ok {
		t.Fatalf("%v still answered within the last %d answers after %v; answers since: %v", names, n, runDeadline, l.since(mark))
	}
}

// holdOrAnswer answers like answerWith, but a request for /hold first signals held and
// waits for release.
func holdOrAnswer(name string, held, release chan struct{}) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(runDeadline))
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if req.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(name), name)
	}
}

// nameWithCookie gets url with a Cookie header on a new connection and returns the body.
func nameWithCookie(url, cookie string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Cookie", cookie)
	resp, err := newClient(false).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s, %q, %v", url, resp.Status, body, err)
	}
	return string(body), nil
}

func writeServers(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "servers.txt")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Pods come and go behind a headless Service: lb follows the name's addresses through
// --resolver while requests flow, and no request fails. A new address is probed before
// its first connection (one that does not listen yet gets none); a vanished one stops
// getting connections, while a request it holds open finishes; a failing DNS server changes
// nothing. Sticky cookies name pods by ids made from their addresses, across lookups.
func TestDiscoverAddressesComeAndGo(t *testing.T) {
	slow(t, "waits for re-resolution, 1s apart at the least")
	dns := dnstest.Start(t)
	port := freeport.Get(t)
	pod := func(n int) string { return fmt.Sprintf("127.0.0.%d", 30+n) }
	pods := map[int]*tcpBackend{}
	held, release := make(chan struct{}, 1), make(chan struct{})
	startPod := func(n int) {
		pods[n] = startTCPBackendOn(t, net.JoinHostPort(pod(n), strconv.Itoa(port)), holdOrAnswer("pod-"+strconv.Itoa(n), held, release))
	}
	// Each pod's id is made from its address: a cookie can name it before lb has seen it.
	cookie := func(n int) string {
		return "lb_srv=" + serversfile.AddrID(net.JoinHostPort(pod(n), strconv.Itoa(port)), false)
	}
	startPod(1)
	startPod(2)
	dns.SetA("app.ns.svc.cluster.local", pod(1), pod(2))
	servers := writeServers(t, "app.ns.svc.cluster.local:"+strconv.Itoa(port)+" discover=a\n")
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--resolver", dns.Addr,
		"--resolve-every", "1s", "--health-interval", "100ms", "--rise", "2", "--sticky-cookie", "lb_srv")
	url := "http://" + lb.Addr + "/"
	loop := startNameLoop(url)
	defer loop.stop()
	loop.waitServed(t, 0, "pod-1")
	loop.waitServed(t, 0, "pod-2")
	for n := 1; n <= 2; n++ {
		if got, err := nameWithCookie(url, cookie(n)); got != "pod-"+strconv.Itoa(n) {
			t.Fatalf("with %s: answered by %q (%v), want pod-%d", cookie(n), got, err, n)
		}
	}
	// A request that pod 1 holds open while it leaves DNS.
	heldDone := make(chan error, 1)
	go func() {
		got, err := nameWithCookie(url+"hold", cookie(1))
		if err == nil && got != "pod-1" {
			err = fmt.Errorf("answered by %q", got)
		}
		heldDone <- err
	}()
	select {
	case <-held:
	case <-time.After(runDeadline):
		t.Fatalf("the held request did not reach pod 1 within %v", runDeadline)
	}

	// Scale up: pod 3 appears in DNS before it listens, as a pod not yet ready would.
	dns.SetA("app.ns.svc.cluster.local", pod(1), pod(2), pod(3))
	if _, ok := lb.log.waitFor(0, runDeadline, func(e logEntry) bool { return e.Message == "backend found: probing it" }); !ok {
		t.Fatalf("lb did not log finding pod 3 within %v", runDeadline)
	}
	mark := loop.mark()
	startPod(3)
	loop.waitServed(t, mark, "pod-3")

	// Scale down: pod 1 leaves DNS first, then, once lb has stopped sending it connections,
	// its server goes (Kubernetes removes a terminating pod from the endpoints at once).
	dns.SetA("app.ns.svc.cluster.local", pod(2), pod(3))
	if _, ok := lb.log.waitFor(0, runDeadline, func(e logEntry) bool { return e.Message == "backend gone: draining" }); !ok {
		t.Fatalf("lb did not log pod 1 gone within %v", runDeadline)
	}
	mark = loop.mark()
	loop.waitQuiet(t, mark, 50, "pod-1")
	// Removed from the ring is not cut: the request open to pod 1 finishes.
	close(release)
	if err := <-heldDone; err != nil {
		t.Fatalf("the request held by pod 1 while it left DNS: %v", err)
	}
	pods[1].close()
	// Its cookie now names no backend: re-balanced, not failed. Pod 2's still leads to pod 2.
	if got, err := nameWithCookie(url, cookie(1)); err != nil || got == "pod-1" {
		t.Fatalf("with the cookie of the gone pod 1: %q, %v; want another pod", got, err)
	}
	if got, err := nameWithCookie(url, cookie(2)); got != "pod-2" {
		t.Fatalf("with %s after pods came and went: %q (%v), want pod-2", cookie(2), got, err)
	}

	// The DNS server fails for a while: the last good set keeps serving.
	dns.Fail("app.ns.svc.cluster.local", true)
	before := dns.Queries()
	if !waitUntil(runDeadline, func() bool { return dns.Queries() >= before+2 }) {
		t.Fatalf("lb made no more lookups within %v", runDeadline)
	}
	mark = loop.mark()
	if !waitUntil(runDeadline, func() bool { s := loop.since(mark); return s["pod-2"] > 0 && s["pod-3"] > 0 }) {
		t.Fatalf("with DNS failing, answers came from %v; want pods 2 and 3", loop.since(mark))
	}
	dns.Fail("app.ns.svc.cluster.local", false)

	loop.stop()
	if len(loop.errs) > 0 {
		t.Fatalf("%d of %d requests failed while pods came and went; first: %s", len(loop.errs), len(loop.errs)+len(loop.names), loop.errs[0])
	}
	if s := loop.since(0); s["pod-1"] == 0 || s["pod-2"] == 0 || s["pod-3"] == 0 {
		t.Fatalf("answers by pod: %v; want every pod to have served", s)
	}
	t.Logf("%d requests, none failed: %v", len(loop.names), loop.since(0))
}

// An SRV name gives targets, ports and weights: lb uses only the lowest priority that has a
// backend up, in the proportions of the weights, and falls back to the next priority when
// all of the lowest are down.
func TestDiscoverSRVPrioritiesAndWeights(t *testing.T) {
	slow(t, "waits for probes to fail over between SRV priorities")
	dns := dnstest.Start(t)
	a := startTCPBackend(t, answerWith("a"))
	b := startTCPBackend(t, answerWith("b"))
	backup := startTCPBackendOn(t, "[::1]:0", answerWith("backup"))
	dns.SetA("a.node.consul", "127.0.0.1")
	dns.SetA("b.node.consul", "127.0.0.1")
	dns.SetA("backup.node.consul", "::1")
	portOf := func(addr string) uint16 {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return uint16(n)
	}
	dns.SetSRV("_http._tcp.web.service.consul",
		dnstest.SRV{Target: "a.node.consul", Port: portOf(a.Addr), Priority: 1, Weight: 3},
		dnstest.SRV{Target: "b.node.consul", Port: portOf(b.Addr), Priority: 1, Weight: 1},
		dnstest.SRV{Target: "backup.node.consul", Port: portOf(backup.Addr), Priority: 2, Weight: 10})
	servers := writeServers(t, "_http._tcp.web.service.consul discover=srv\n")
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--resolver", dns.Addr,
		"--resolve-every", "1s", "--health-interval", "100ms", "--rise", "2", "--fall", "1")
	// Priority 2 is dropped at the first check after start, and drained.
	if _, ok := lb.log.waitFor(0, runDeadline, func(e logEntry) bool { return e.Message == "backend gone: draining" }); !ok {
		t.Fatalf("lb kept priority 2 beside an up priority 1 for %v", runDeadline)
	}
	client := newClient(false)
	seen := map[string]int{}
	for range 400 {
		name, err := nameOf(client, "http://"+lb.Addr+"/")
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if seen["a"] != 300 || seen["b"] != 100 || seen["backup"] != 0 {
		t.Fatalf("400 requests: %v; want a 300, b 100 (SRV weights 3:1), backup none (priority 2)", seen)
	}

	// Priority 1 goes away: the backup is brought back, probed, and serves.
	a.close()
	b.close()
	if !waitUntil(runDeadline, func() bool { name, err := nameOf(client, "http://"+lb.Addr+"/"); return err == nil && name == "backup" }) {
		t.Fatalf("priority 2 did not take over within %v of priority 1 going down", runDeadline)
	}
}

// lb probe dials every address a discover= line finds, through --resolver; a bad
// --resolver is bad input.
func TestProbeDiscover(t *testing.T) {
	dns := dnstest.Start(t)
	a := startTCPBackend(t, echo)
	_, port, _ := net.SplitHostPort(a.Addr)
	dns.SetA("app.test", "127.0.0.1", "127.0.0.51") // 127.0.0.51: nothing listens there
	servers := writeServers(t, "app.test:"+port+" discover=a\n")
	stdout, stderr, status := runLB(t, "probe", "-f", servers, "--resolver", dns.Addr, "--health-timeout", "500ms")
	if status != 1 || probeState(stdout, a.Addr) != "up" || probeState(stdout, "127.0.0.51:"+port) != "down" {
		t.Fatalf("probe of a discover=a line: exit %d, want 1 with %s up and 127.0.0.51:%s down; stdout:\n%s\nstderr: %s", status, a.Addr, port, stdout, stderr)
	}
	_, stderr, status = runLB(t, "probe", "-f", servers, "--resolver", "dns.example:53")
	if status != 2 || !strings.Contains(stderr, "--resolver dns.example:53: want an IP address and port") {
		t.Fatalf("probe --resolver dns.example:53: exit %d, stderr %q; want 2 naming the flag", status, stderr)
	}
}
