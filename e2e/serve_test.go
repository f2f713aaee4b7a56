package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// roundTrip writes msg on c and reads it back from an echo backend.
func roundTrip(c net.Conn, msg string) error {
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("write %q: %w", msg, err)
	}
	got := make([]byte, len(msg))
	if n, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("echo of %q: %q, %w", msg, got[:n], err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo of %q: %q", msg, got)
	}
	return nil
}

// waitClosed waits up to within for the peer to close c: a read that ends in EOF or a reset.
func waitClosed(c net.Conn, within time.Duration) error {
	c.SetReadDeadline(time.Now().Add(within))
	n, err := c.Read(make([]byte, 1))
	switch {
	case n > 0:
		return fmt.Errorf("read a byte, want the connection closed")
	case err == io.EOF, isReset(err):
		return nil
	}
	return fmt.Errorf("not closed: %w", err)
}

// --idle-timeout 0 means never: a connection idle for 1 s, long after a 200 ms idle timeout
// has closed the same kind of connection on another lb (so the sweeps did run), still works.
func TestIdleTimeoutZeroIsNever(t *testing.T) {
	slow(t, "a connection idles 1 s")
	backend := startTCPBackend(t, echo)
	servers := writeServersFile(t, backend.Addr)
	// Short sniff and connect timeouts make the sweep run every 50 ms.
	fast := []string{"serve", "-f", servers, "--listen", "127.0.0.1:0", "--sniff-timeout", "200ms", "--connect-timeout", "200ms"}
	timed := startLB(t, nil, append(fast, "--idle-timeout", "200ms")...)
	never := startLB(t, nil, append(fast, "--idle-timeout", "0")...)
	const head = "GET / HTTP/1.1\r\nHost: e2e\r\n\r\n"
	ct, cn := dialLB(t, timed.Addr), dialLB(t, never.Addr)
	for _, c := range []net.Conn{ct, cn} {
		if err := roundTrip(c, head); err != nil {
			t.Fatal(err)
		}
	}
	idle := time.NewTimer(time.Second) // the idle time itself is what this test is about
	if err := waitClosed(ct, ioDeadline); err != nil {
		t.Fatalf("--idle-timeout 200ms: the idle connection after %v: %v", ioDeadline, err)
	}
	<-idle.C
	cn.SetDeadline(time.Now().Add(ioDeadline))
	if err := roundTrip(cn, "still here\n"); err != nil {
		t.Fatalf("--idle-timeout 0: a connection idle for 1s: %v; want it open", err)
	}
	cn.Close()
	timed.stop(t)
	never.stop(t)
}

// holdOpen dials lb, routes the connection to the echo backend and checks it works.
func holdOpen(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c := dialLB(t, addr)
	if err := roundTrip(c, "GET /held HTTP/1.1\r\nHost: e2e\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// exitWithin waits up to within for lb to exit and returns how long it took.
func (p *lbProcess) exitWithin(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-p.done:
		return time.Since(start)
	case <-time.After(within):
		t.Fatalf("lb still runs %v after the signal", within)
		return 0
	}
}

// A second SIGTERM during the drain ends lb at once, though a connection is open and the
// drain timeout is a minute away.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	backend := startTCPBackend(t, echo)
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, backend.Addr), "--listen", "127.0.0.1:0", "--drain-timeout", "1m")
	c := holdOpen(t, lb.Addr)

	mark := lb.log.len()
	lb.signal(t, syscall.SIGTERM)
	if _, ok := lb.log.waitFor(mark, 5*time.Second, func(e logEntry) bool { return strings.HasPrefix(e.Message, "shutting down") }); !ok {
		t.Fatalf("lb did not log \"shutting down\" within 5s of SIGTERM")
	}
	if err := roundTrip(c, "draining\n"); err != nil {
		t.Fatalf("the open connection during the drain: %v", err)
	}
	lb.signal(t, syscall.SIGTERM)
	took := lb.exitWithin(t, 5*time.Second) // well inside the drain timeout of 1m
	if err := waitClosed(c, ioDeadline); err != nil {
		t.Errorf("the client's connection after lb exited: %v", err)
	}
	t.Logf("lb exited %v after the second SIGTERM (%v)", took.Round(time.Millisecond), lb.err)
}

// When the drain timeout runs out, lb closes the connections still open and exits 0.
func TestDrainTimeoutClosesTheRest(t *testing.T) {
	backend := startTCPBackend(t, echo)
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, backend.Addr), "--listen", "127.0.0.1:0", "--drain-timeout", "500ms")
	c := holdOpen(t, lb.Addr)

	start := time.Now()
	lb.signal(t, syscall.SIGTERM)
	lb.wait(t, 5*time.Second) // exit status 0, 10 times the drain timeout
	took := time.Since(start)
	if took < 500*time.Millisecond {
		t.Errorf("lb exited %v after SIGTERM, before its drain timeout of 500ms, with a connection open", took)
	}
	if _, ok := lb.log.waitFor(0, 0, func(e logEntry) bool { return strings.HasPrefix(e.Message, "drain timeout") }); !ok {
		t.Errorf("lb did not log its drain timeout")
	}
	if err := waitClosed(c, ioDeadline); err != nil {
		t.Errorf("the client's connection after the drain timeout: %v", err)
	}
}

// The --log-level debug line of a connection carries its client, backend, bytes each way,
// duration and sniff result, with the values of a known exchange.
func TestDebugConnectionLine(t *testing.T) {
	const hold = 300 * time.Millisecond
	reply := append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n"), pattern(200000, 5)...)
	backend := startTCPBackend(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(ioDeadline))
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		<-time.After(hold) // the exchange lasts at least this long, by construction
		c.Write(reply)
	})
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, backend.Addr+" id=known"), "--listen", "127.0.0.1:0", "--log-level", "debug")

	body := pattern(100000, 6)
	request := append([]byte(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: e2e\r\nContent-Length: %d\r\n\r\n", len(body))), body...)
	start := time.Now()
	c := dialLB(t, lb.Addr)
	client := c.LocalAddr().String()
	if _, err := c.Write(request); err != nil {
		t.Fatal(err)
	}
	got, err := errReadAll("read the reply", c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, reply) {
		t.Fatalf("reply of %d bytes, want %d; first difference at %d", len(got), len(reply), firstDiff(got, reply))
	}
	c.Close()
	line, ok := lb.log.waitFor(0, 5*time.Second, func(e logEntry) bool { return e.Message == "connection closed" })
	if !ok {
		t.Fatal("no \"connection closed\" line at --log-level debug")
	}
	elapsed := time.Since(start)
	f := fields(t, line)
	for name, want := range map[string]any{
		"level":      "debug",
		"client":     client,
		"backend":    "known",
		"sniff":      "http1",
		"bytes_up":   float64(len(request)),
		"bytes_down": float64(len(reply)),
	} {
		if f[name] != want {
			t.Errorf("%s = %v (%T), want %v: %s", name, f[name], f[name], want, line.raw)
		}
	}
	ms, ok := f["duration"].(float64) // zerolog: milliseconds
	if d := time.Duration(ms * float64(time.Millisecond)); !ok || d < hold || d > elapsed {
		t.Errorf("duration = %v, want between the backend's hold %v and the %v the test saw: %s", f["duration"], hold, elapsed, line.raw)
	}
	lb.stop(t)
}

// loopsServing counts lb's event loops that serve connections accepted on port now: on
// epoll, the epoll sets of process pid that watch at least one such socket; on io_uring, the
// rings with receives waiting (op 27 in their fdinfo's poll list: two a held connection).
func loopsServing(t *testing.T, pid, port int) (int, []int) {
	t.Helper()
	accepted := map[string]bool{} // socket inodes
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(row)
			if len(f) < 10 || f[3] != "01" { // established
				continue
			}
			if _, p, ok := strings.Cut(f[1], ":"); ok && p == fmt.Sprintf("%04X", port) {
				accepted["socket:["+f[9]+"]"] = true
			}
		}
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	loops := 0
	var perLoop []int
	for _, ent := range ents {
		target, _ := os.Readlink(filepath.Join(fdDir, ent.Name()))
		if target != "anon_inode:[eventpoll]" && target != "anon_inode:[io_uring]" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		n, recvs := 0, 0
		for _, line := range strings.Split(string(info), "\n") {
			if strings.TrimSpace(line) == "op=27, task_works=0" { // IORING_OP_RECV
				recvs++
			}
			if rest, ok := strings.CutPrefix(line, "tfd:"); ok {
				fd := strings.Fields(rest)[0]
				if target, _ := os.Readlink(filepath.Join(fdDir, fd)); accepted[target] {
					n++
				}
			}
		}
		n += recvs / 2
		if n > 0 {
			loops++
			perLoop = append(perLoop, n)
		}
	}
	return loops, perLoop
}

// --threads 2: many connections at once, held open, then 64 KiB each way on every one, byte
// for byte; and both event loops serve some of them. Which loop accepts is the kernel's
// choice, so connections are opened 50 at a time, 100 at least, until both loops hold some
// (400 at most).
func TestTwoThreads(t *testing.T) {
	slow(t, "100 to 400 connections, 64 KiB each way on each")
	backend := startTCPBackend(t, echo)
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, backend.Addr), "--listen", "127.0.0.1:0", "--threads", "2")
	_, port, _ := net.SplitHostPort(lb.Addr)
	p, _ := strconv.Atoi(port)
	var conns []*net.TCPConn
	var wg sync.WaitGroup
	loops, perLoop := 0, []int(nil)
	for len(conns) < 100 || loops < 2 && len(conns) < 400 {
		batch := make([]*net.TCPConn, 50)
		errs := make(chan error, len(batch))
		for i := range batch {
			batch[i] = dialLB(t, lb.Addr)
			wg.Go(func() {
				if err := roundTrip(batch[i], fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: e2e\r\n\r\n", len(conns)+i)); err != nil {
					errs <- fmt.Errorf("connection %d: %w", len(conns)+i, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		conns = append(conns, batch...)
		loops, perLoop = loopsServing(t, lb.cmd.Process.Pid, p)
	}
	t.Logf("%d open connections watched by %d loops: %v", len(conns), loops, perLoop)
	if loops != 2 {
		t.Errorf("with --threads 2 and %d connections open, %d event loops serve them (%v), want 2", len(conns), loops, perLoop)
	}
	n := len(conns)

	errs := make(chan error, n)
	for i, c := range conns {
		wg.Go(func() {
			sent := pattern(64<<10, byte(i))
			got, err := echoThrough(c, sent)
			if err == nil && !bytes.Equal(got, sent) {
				err = fmt.Errorf("echo of %d bytes: %d bytes, sha256 %x, want %x", len(sent), len(got), sha256.Sum256(got), sha256.Sum256(sent))
			}
			if err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	lb.stop(t)
}

// IPv6: lb on [::1] in front of a backend on [::1] moves bytes both ways.
func TestIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	backend := startTCPBackendOn(t, "[::1]:0", echo)
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, backend.Addr+" id=six"), "--listen", "[::1]:0", "--log-level", "debug")
	if host, _, _ := net.SplitHostPort(lb.Addr); host != "::1" {
		t.Fatalf("lb listens on %s, want [::1]", lb.Addr)
	}
	sent := append([]byte("PUT /six HTTP/1.1\r\nHost: e2e\r\nContent-Length: 1048576\r\n\r\n"), pattern(1<<20, 7)...)
	c := dialLB(t, lb.Addr)
	got, err := echoThrough(c, sent)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("echo over IPv6 of %d bytes: %d bytes, first difference at %d", len(sent), len(got), firstDiff(got, sent))
	}
	c.Close()
	line, ok := lb.log.waitFor(0, 5*time.Second, func(e logEntry) bool { return e.Message == "connection closed" })
	if !ok {
		t.Fatal("no \"connection closed\" line")
	}
	if f := fields(t, line); f["client"] != c.LocalAddr().String() || f["backend"] != "six" {
		t.Errorf("connection line %s, want client %s and backend six", line.raw, c.LocalAddr())
	}
	lb.stop(t)
}
