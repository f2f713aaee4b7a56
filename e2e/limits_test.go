package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowHTTP answers one request a connection, 200 ms after its head, and closes: a backend
// slow enough that thousands of clients pile up in lb.
func slowHTTP(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(startDeadline))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // the backend's own latency
	fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
}

// TestConnectionLimitFromOpenFiles runs lb with 2,000 open files and sends 3,000 clients at
// once: lb derives a limit that leaves descriptors for its backends, stops accepting there,
// and the kernel's backlog holds the rest. Every client is served; none gets a 503.
func TestConnectionLimitFromOpenFiles(t *testing.T) {
	slow(t, "3,000 clients")
	requireTool(t, "prlimit")
	b1, b2 := startTCPBackend(t, slowHTTP), startTCPBackend(t, slowHTTP)
	lb := startLBWith(t, []string{"prlimit", "--nofile=2000:2000"}, nil,
		"serve", "-f", writeServersFile(t, b1.Addr, b2.Addr), "--listen", "127.0.0.1:0")
	start, _ := lb.log.waitFor(0, 0, func(e logEntry) bool { return e.Message == "listening" })
	if !strings.Contains(start.raw, `"max_conns":`) {
		t.Fatalf("the listening line does not give the connection limit: %s", start.raw)
	}

	const clients = 3000
	statuses := make(chan string, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", lb.Addr, 10*time.Second)
			if err != nil {
				statuses <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				statuses <- err.Error()
				return
			}
			resp.Body.Close()
			statuses <- resp.Status
		})
	}
	wg.Wait()
	close(statuses)
	counts := map[string]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts["200 OK"] != clients {
		t.Errorf("of %d clients: %v; want every one 200 OK", clients, counts)
	}
	if _, ok := lb.log.waitFor(0, 0, func(e logEntry) bool {
		return e.Message == "connection limit reached: new clients wait in the listen backlog"
	}); !ok {
		t.Error("lb never reached its connection limit: the test proves nothing")
	}
	for _, bad := range []string{"out of descriptors: new connections wait for one; raise the open-files limit", "accept failed: pausing accepts, open connections go on"} {
		if _, ok := lb.log.waitFor(0, 0, func(e logEntry) bool { return e.Message == bad }); ok {
			t.Errorf("lb logged %q: the limit left too few descriptors", bad)
		}
	}
	lb.stop(t)
}
