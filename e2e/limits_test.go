package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowHTTP answers one request a connection, 200 ms after its head, and closes: a backend
// slow enough that thousands of clients pile up in lb.
func slowHTTP(c *net.TCPConn) { answerSlowly(c, bufio.NewReader(c)) }

func answerSlowly(c *net.TCPConn, r *bufio.Reader) {
	c.SetDeadline(time.Now().Add(startDeadline))
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
	var limit struct {
		MaxConns int `json:"max_conns"`
	}
	if err := json.Unmarshal([]byte(start.raw), &limit); err != nil || limit.MaxConns == 0 {
		t.Fatalf("the listening line does not give the connection limit: %s", start.raw)
	}
	// HAProxy holds 991 clients under the same limit: lb reserves no more than it needs
	// (probes for two backends, not 256 a pool; one spare pipe, not 64).
	if limit.MaxConns < 990 {
		t.Errorf("at 2,000 open files lb holds %d connections, want at least 990 (HAProxy's 991)", limit.MaxConns)
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

// TestSlowlorisNeverReachesTheBackends: 3,000 connections that send a byte of a head every
// 2 s, against --sniff-timeout 1s --sniff-timeout-action close: lb closes every one and the
// backend accepts none; a whole request is served meanwhile.
func TestSlowlorisNeverReachesTheBackends(t *testing.T) {
	slow(t, "3,000 slowloris connections")
	var requests atomic.Int64 // connections that sent a byte: health probes send none
	b := startTCPBackend(t, func(c *net.TCPConn) {
		r := bufio.NewReader(c)
		if _, err := r.Peek(1); err == nil {
			requests.Add(1)
			answerSlowly(c, r)
		}
	})
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, b.Addr), "--listen", "127.0.0.1:0",
		"--sniff-timeout", "1s", "--sniff-timeout-action", "close")
	const clients = 3000
	var closedByLB atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", lb.Addr, 10*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			for _, b := range []byte("GET / HTTP/1.1\r\n") {
				if _, err := c.Write([]byte{b}); err != nil {
					closedByLB.Add(1)
					return
				}
				// Wait 2 s for the next byte: the slowloris's pace, or lb's close.
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
					closedByLB.Add(1)
					return
				}
			}
		})
	}
	if status := getStatus(t, lb.Addr); status != "200 OK" {
		t.Errorf("a whole request among the slowloris: %s", status)
	}
	wg.Wait()
	if n := closedByLB.Load(); n != clients {
		t.Errorf("lb closed %d of %d slowloris connections", n, clients)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d connections sent the backend bytes: want only the whole request", n)
	}
}

func getStatus(t *testing.T, addr string) string {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return resp.Status
}

// TestFewDescriptorsTakeNoBackendDown: under prlimit --nofile=256, 400 clients used to run
// lb out of descriptors for its backend sockets, and the failed dials took both healthy
// backends down: 503s for seconds after the clients had gone. Now lb holds what its limit
// allows (64 here), the rest wait in the backlog, nothing is blamed on the backends, and the
// requests that follow are served.
func TestFewDescriptorsTakeNoBackendDown(t *testing.T) {
	ngx := startNginx(t, 2)
	lb := startLBWith(t, []string{"prlimit", "--nofile=256:256"}, nil,
		"serve", "-f", writeServersFile(t, ngx[0].Addr, ngx[1].Addr), "--listen", "127.0.0.1:0")
	var held []net.Conn
	for range 400 { // idle at first: lb accepts what it will before any request needs a backend
		c, err := net.DialTimeout("tcp", lb.Addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if _, ok := lb.log.waitFor(0, 10*time.Second, func(e logEntry) bool {
		return strings.HasPrefix(e.Message, "connection limit reached") || strings.HasPrefix(e.Message, "accept failed")
	}); !ok {
		t.Fatal("lb took 400 clients under a limit of 256 open files: the test proves nothing")
	}
	var answered atomic.Int64
	var wg sync.WaitGroup
	for _, c := range held {
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n") // then idle on a keep-alive connection
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				resp.Body.Close()
				answered.Add(1)
			}
		})
	}
	if !waitUntil(10*time.Second, func() bool { return answered.Load() >= 64 }) {
		t.Fatalf("%d of 400 clients answered, want lb's limit of 64 at least", answered.Load())
	}
	for _, c := range held {
		c.Close()
	}
	wg.Wait()
	client := newClient(false)
	for i := range 16 {
		if _, err := backendOf(client, "http://"+lb.Addr+"/"); err != nil {
			t.Fatalf("request %d after the 400 clients left: %v", i, err)
		}
	}
	if e, ok := lb.log.waitFor(0, 0, func(e logEntry) bool { return e.Message == "backend down" }); ok {
		t.Errorf("a healthy backend was taken down: %s", e.raw)
	}
}
