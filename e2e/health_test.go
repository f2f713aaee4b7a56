package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"lb/internal/freeport"
)

// answerWith is a backend that answers one HTTP request with its name as the body.
func answerWith(name string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(ioDeadline))
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(name), name)
	}
}

// nameOf gets url on a new connection and returns the body: the name of the backend.
func nameOf(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
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

// fields decodes every field of a JSON log line.
func fields(t *testing.T, e logEntry) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(e.raw), &m); err != nil {
		t.Fatalf("log line %q: %v", e.raw, err)
	}
	return m
}

// dialFailures counts lb's debug lines of failed data-path dials to the backend id.
func dialFailures(lb *lbProcess, id string) int {
	n := 0
	for _, e := range lb.log.entries(0) {
		if e.Message == "dial failed, trying the next backend" && e.Backend == id {
			n++
		}
	}
	return n
}

// A failed dial on the data path counts toward --fall (serve wires l4's OnDialFailure to
// the prober): with probes an hour apart, the first connection whose dial fails takes the
// backend down, and no later connection is dialed to it.
func TestDialFailureTakesBackendDown(t *testing.T) {
	dead, live := startTCPBackend(t, answerWith("dead")), startTCPBackend(t, answerWith("live"))
	servers := writeServersFile(t, dead.Addr+" id=dead", live.Addr+" id=live")
	// One loop, so the report of a failed dial is done before the next connection is routed.
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--log-level", "debug",
		"--health-interval", "1h", "--fall", "1", "--threads", "1")
	dead.closeListener() // refused from now on; no probe will notice for an hour

	client := newClient(false)
	url := "http://" + lb.Addr + "/"
	// Round robin over two backends: one of the first two connections picks dead.
	for i := range 2 {
		if name, err := nameOf(client, url); err != nil || name != "live" {
			t.Fatalf("connection %d after dead closed: %q, %v; want live to answer (the next backend after a failed dial)", i, name, err)
		}
	}
	down, ok := lb.log.waitFor(0, 5*time.Second, func(e logEntry) bool { return e.Message == "backend down" && e.ID == "dead" })
	if !ok {
		t.Fatalf("%d data-path dials to dead failed, but lb did not take it down (--fall 1): failed dials do not reach health", dialFailures(lb, "dead"))
	}
	if why := fields(t, down)["error"]; why != "dial failed on the data path" {
		t.Errorf("backend down for %v, want the data path's reason: %s", why, down.raw)
	}
	for i := range 10 {
		if name, err := nameOf(client, url); err != nil || name != "live" {
			t.Fatalf("connection %d after dead went down: %q, %v; want live", i, name, err)
		}
	}
	if n := dialFailures(lb, "dead"); n != 1 {
		t.Errorf("lb dialed dead %d times and failed; want once, then no dial to a backend it took down", n)
	}
	lb.stop(t)
}

// A backend down when lb starts gets no client connection until --rise probes in a row have
// passed once it listens: the first connection that carries a request comes after rise
// probe connections in the backend's own accept order.
func TestDownAtStartNeedsRise(t *testing.T) {
	live := startTCPBackend(t, answerWith("live"))
	lateAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	servers := writeServersFile(t, live.Addr+" id=live", lateAddr+" id=late")
	const rise = 3
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--log-level", "debug",
		"--health-interval", "100ms", "--health-timeout", "1s", "--rise", fmt.Sprint(rise), "--threads", "1")
	if e, _ := lb.log.waitFor(0, 0, func(e logEntry) bool { return e.Message == "listening" }); e.Up == nil || *e.Up != 1 {
		t.Fatalf("lb started with other than 1 backend up (late does not listen yet): %s", e.raw)
	}

	url := "http://" + lb.Addr + "/"
	var mu sync.Mutex
	var answers []string
	var errs []error
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		client := newClient(false)
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			name, err := nameOf(client, url)
			mu.Lock()
			answers, errs = append(answers, name), append(errs, err)
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-stopped
	}()
	count := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range answers {
			if a == name {
				n++
			}
		}
		return n
	}
	if !waitUntil(10*time.Second, func() bool { return count("live") >= 20 }) {
		t.Fatalf("the request loop got %d answers from live in 10s, want 20", count("live"))
	}
	if n := dialFailures(lb, "late"); n > 0 {
		t.Fatalf("lb dialed late %d times before it listened: a backend down at start-up got connections", n)
	}

	// late listens now. It numbers its connections in accept order (the kernel's queue is
	// FIFO, and a probe's connection is queued before the probe returns); probes close
	// without a byte, clients send a request.
	var amu sync.Mutex
	var kinds []string // by accept order: "probe", "client", or "" while undecided
	ln, err := net.Listen("tcp", lateAddr)
	if err != nil {
		t.Fatalf("late cannot listen on its port %s: %v", lateAddr, err)
	}
	var wg sync.WaitGroup
	defer func() { ln.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			amu.Lock()
			i := len(kinds)
			kinds = append(kinds, "")
			amu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioDeadline))
				br := bufio.NewReader(c)
				kind := "probe"
				if _, err := br.Peek(1); err == nil {
					kind = "client"
				}
				amu.Lock()
				kinds[i] = kind
				amu.Unlock()
				if kind == "client" {
					if _, err := http.ReadRequest(br); err == nil {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlate")
					}
				}
			}()
		}
	}()

	up, ok := lb.log.waitFor(0, 10*time.Second, func(e logEntry) bool { return e.Message == "backend up" && e.ID == "late" })
	if !ok {
		t.Fatalf("late listens on %s but lb did not log \"backend up\" for it within 10s", lateAddr)
	}
	if got := fields(t, up)["successes"]; got != float64(rise) {
		t.Errorf("late came up after %v good probes, want --rise %d: %s", got, rise, up.raw)
	}
	if !waitUntil(10*time.Second, func() bool { return count("late") >= 1 }) {
		t.Fatalf("late is up (%s) but no request reached it within 10s", up.raw)
	}
	close(stop)
	<-stopped

	// Connections accepted before the first client's are probes, decided once they end.
	var seen []string
	probes := 0
	decided := waitUntil(5*time.Second, func() bool {
		amu.Lock()
		seen = append(seen[:0], kinds...)
		amu.Unlock()
		probes = 0
		for _, k := range seen {
			switch k {
			case "client":
				return true
			case "probe":
				probes++
			default:
				return false
			}
		}
		return false
	})
	if !decided {
		t.Fatalf("late's connections before its first client's are still undecided after 5s: %v", seen)
	}
	if probes < rise {
		t.Errorf("late's first client connection came after %d probe connections, want --rise %d; accept order %v", probes, rise, seen)
	}
	mu.Lock()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d failed: %v", i, err)
		}
	}
	mu.Unlock()
	lb.stop(t)
}
