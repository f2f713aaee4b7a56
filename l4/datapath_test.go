//go:build linux

package l4

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dialSmallWindow connects to addr with a small receive buffer, so that a client that does not
// read stalls lb's flow towards it after a few kilobytes.
func dialSmallWindow(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioDeadline))
	return c.(*net.TCPConn)
}

// listenSmallSendBuffer listens on loopback with a small, fixed send buffer, which the
// sockets it accepts inherit: lb's flow to a client that does not read stalls after a few
// kilobytes, and stays stalled.
func listenSmallSendBuffer(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 8192) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// unacked is how many bytes (a FIN counts as one) c has sent that its peer has not acknowledged.
func unacked(c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
	return n
}

// cpuTime is the CPU time the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPUTime is the CPU time the calling thread has used so far.
func threadCPUTime() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// spinBudget is the CPU time a reference thread gets while a test looks for a spinning loop.
const spinBudget = 150 * time.Millisecond

// cpuBesideABusyThread keeps one thread of the process busy until it has had spinBudget of
// CPU time (or 10 s have passed), and returns the CPU time the rest of the process used
// meanwhile, and the reference thread's. Whatever else the machine runs, a loop that spins
// competes for the CPUs as that thread does and uses about as much; a loop that waits uses a
// few milliseconds. (A fixed wall-clock window cannot tell them apart on a machine busy with
// other work, where a spinning loop gets little CPU, nor a plain sum of run and queue times,
// which a busy machine inflates for every wake-up.)
func cpuBesideABusyThread() (rest, ref time.Duration) {
	before := cpuTime()
	done := make(chan time.Duration)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start, deadline := threadCPUTime(), time.Now().Add(10*time.Second)
		x := uint64(1)
		for threadCPUTime()-start < spinBudget && time.Now().Before(deadline) {
			for range 10000 {
				x = x*6364136223846793005 + 1442695040888963407
			}
		}
		used := threadCPUTime() - start
		if x == 0 { // never: keeps the work from being optimized away
			used++
		}
		done <- used
	}()
	ref = <-done
	return cpuTime() - before - ref, ref
}

// checkNoSpin fails t if the process uses, beside a busy reference thread, a third of the CPU
// time that thread gets: a loop spins.
func checkNoSpin(t *testing.T, while string) {
	t.Helper()
	if rest, ref := cpuBesideABusyThread(); rest > ref/3 {
		t.Errorf("the process used %v of CPU while a busy thread got %v, %s: a loop spins", rest, ref, while)
	}
}

// TestStalledFlowAfterHangupDoesNotSpin: the client half-closes, the backend answers more than
// the client takes and closes, so lb's backend socket has both shut down (EPOLLHUP, which epoll
// reports whatever the interest) while its flow waits for the client to read. The loop must
// wait for the client, not spin on the hang-up.
func TestStalledFlowAfterHangupDoesNotSpin(t *testing.T) {
	big := randomBytes(t, 4<<20)
	var srv atomic.Pointer[Server]
	type answer struct {
		c    *net.TCPConn
		sent []byte
	}
	answered, checked := make(chan answer, 1), make(chan struct{})
	defer close(checked) // before the backend's cleanup waits for its handler
	b := startBackend(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
		// Answer until lb's flow to the client stalls for good (beyond the 24 KiB the client's
		// and lb's small buffers hold), then close.
		sent := 0
		for sent < len(big) && (sent < 64<<10 || stalledFlows(srv.Load()) == 0) {
			n, err := c.Write(big[sent : sent+16<<10])
			sent += n
			if err != nil {
				break
			}
		}
		c.CloseWrite()
		answered <- answer{c, big[:sent]}
		<-checked
	})
	s := serveOn(t, testConfig(), listenSmallSendBuffer(t), b.addr())
	srv.Store(s.Server)
	c := dialSmallWindow(t, s.addr)
	io.WriteString(c, "x")
	c.CloseWrite()
	a := <-answered
	// Once lb has acknowledged every byte and the FIN, its backend socket is at EOF.
	waitFor(t, "the answer and its FIN acknowledged by lb", func() bool { return unacked(a.c) == 0 })

	checkNoSpin(t, "while its only flow waited")
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, a.sent) {
		t.Fatalf("read %d bytes (%v), want the %d of the answer", len(got), err, len(a.sent))
	}
}

// stalledFlows counts the flows of s holding bytes their destination has not taken yet.
func stalledFlows(s *Server) int {
	n := 0
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil && c.phase == splicing {
					for i := range c.ends {
						if c.ends[i].pending > 0 {
							n++
						}
					}
				}
			}
		})
	}
	return n
}

// tcpSendBufferMax is the most a TCP socket's send buffer grows to by itself
// (net.ipv4.tcp_wmem): lb does not set its own.
func tcpSendBufferMax() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	f := strings.Fields(string(b))
	if err != nil || len(f) != 3 {
		return 4 << 20 // Linux's default
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		return 4 << 20
	}
	return n
}

// replayCutShort reports whether a connection of s is part way through replaying its peeked
// bytes: the backend took some, and the rest waits for it to be writable.
func replayCutShort(s *Server) bool {
	found := false
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil && c.phase == replaying && c.rt != nil && c.rt.written > 0 && c.rt.written < c.rt.first.n {
					found = true
				}
			}
		})
	}
	return found
}

// pollUntil polls cond until it holds or d passes, and reports whether it held: for a
// goroutine that cannot fail the test (a backend's handler).
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// TestReplayInSeveralWritesKeepsEveryByte: a head larger than lb's socket to the backend can
// hold, to a backend that reads nothing until lb's replay is cut short: the replay resumes
// write after write as the backend reads, and the backend gets every byte once, in order.
func TestReplayInSeveralWritesKeepsEveryByte(t *testing.T) {
	// More than lb's send buffer can grow to: the first write of the replay is short by
	// construction, and the small receive buffer makes the rest go in many writes.
	value := make([]byte, tcpSendBufferMax()+2<<20)
	hex.Encode(value, randomBytes(t, len(value)/2))
	head := []byte("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\nX-Big: " + string(value) + "\r\n\r\n")
	sent := append(head, randomBytes(t, 64<<10)...)

	type result struct {
		got      []byte
		err      error
		cutShort bool
	}
	var srv atomic.Pointer[Server]
	received := make(chan result, 1)
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := startBackendOn(t, ln, func(c *net.TCPConn) {
		var r result
		// Read nothing until lb waits for this socket with part of the replay written, or
		// has ended the replay (cut short when it should not have been: no waiting for that).
		pollUntil(10*time.Second, func() bool {
			r.cutShort = replayCutShort(srv.Load())
			return r.cutShort || phaseCount(srv.Load(), replaying) == 0 && phaseCount(srv.Load(), dialing) == 0
		})
		c.SetReadDeadline(time.Now().Add(ioDeadline))
		r.got, r.err = io.ReadAll(c)
		received <- r
	})
	cfg := testConfig()
	cfg.MaxHeaderBytes = len(head) + 1<<20
	cfg.ConnectTimeout = time.Minute // bounds the whole replay
	s := startServer(t, cfg, b.addr())
	srv.Store(s.Server)

	c := dial(t, s.addr)
	wrote := writeThenHalfClose(c, sent)
	r := <-received
	if err := <-wrote; err != nil {
		t.Fatalf("client write: %v", err)
	}
	if r.err != nil || !bytes.Equal(r.got, sent) {
		t.Fatalf("the backend read %d bytes (%v), want the %d sent, equal; they differ from byte %d on (the head is %d)",
			len(r.got), r.err, len(sent), firstDiff(r.got, sent), len(head))
	}
	if !r.cutShort {
		t.Fatal("the replay was never seen cut short: the test proves nothing")
	}
}

// TestReplayCutShortIsNotRetried: the first backend takes part of the replay of a large head
// and then stalls past the connect deadline, or resets. Bytes already went to that backend:
// another one must not get the rest as if it were the whole stream. The client's connection
// is closed with nothing read from it.
func TestReplayCutShortIsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		resets bool // else it stalls
	}{{"stalls", false}, {"resets", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var srv atomic.Pointer[Server]
			release := make(chan struct{})
			var releaseOnce sync.Once
			releaseCut := func() { releaseOnce.Do(func() { close(release) }) }
			took := make(chan int, 1) // bytes of the replay the first backend's socket received
			cut := startBackend(t, func(c *net.TCPConn) {
				if tc.resets {
					// Until lb waits with part of the replay written (or has ended the replay:
					// no waiting for what does not come).
					pollUntil(10*time.Second, func() bool {
						return replayCutShort(srv.Load()) || phaseCount(srv.Load(), replaying) == 0 && phaseCount(srv.Load(), dialing) == 0
					})
				} else {
					<-release
				}
				rc, _ := c.SyscallConn()
				n := -1
				rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
				took <- n
				c.SetLinger(0) // unread bytes: its close is a reset
			})
			defer releaseCut() // before the backends' cleanup waits for their handlers
			live := startBackend(t, echo)
			cfg := testConfig()
			cfg.MaxHeaderBytes = 16 << 20
			cfg.ConnectTimeout = 500 * time.Millisecond
			if tc.resets {
				cfg.ConnectTimeout = time.Minute // the reset ends the replay
			}
			s := startServer(t, cfg, cut.addr(), live.addr())
			srv.Store(s.Server)

			// Larger than lb's send buffer can grow to: the first backend takes part of it.
			head := []byte("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + strings.Repeat("x", tcpSendBufferMax()+2<<20) + "\r\n\r\n")
			c := dial(t, s.addr)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			wrote := make(chan struct{})
			go func() { defer close(wrote); c.Write(head); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			c.Close()
			<-wrote
			if len(got) > 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the client read %d bytes (%v); want the connection closed (or reset) with nothing", len(got), err)
			}
			releaseCut()
			if n := <-took; n <= 0 {
				t.Fatalf("the first backend received %d bytes of the replay: the test proves nothing", n)
			}
			// The second backend's accept queue is first in, first out: once a connection of
			// the test's own is served, any lb made before it was accepted and counted.
			probe := dial(t, live.addr())
			io.WriteString(probe, "x")
			if _, err := io.ReadFull(probe, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			if n := live.conns.Load(); n != 1 {
				t.Fatalf("the second backend had %d connections from lb, want none", n-1)
			}
		})
	}
}

// TestSmallPipesKeepEveryByte: Linux gives a user over fs.pipe-user-pages-soft pipes of 8 KiB
// (or 4 KiB) instead of 64 KiB. The rest of a short write must still fit the pipe that keeps
// it: every byte arrives, once, in order.
func TestSmallPipesKeepEveryByte(t *testing.T) {
	real := pipe2
	t.Cleanup(func() { pipe2 = real }) // after the server's cleanup: registered before it
	pipe2 = func(fds []int) error {
		if err := real(fds); err != nil {
			return err
		}
		_, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, 4096)
		return err
	}
	payload := randomBytes(t, 1<<20)
	b := startBackend(t, func(c *net.TCPConn) {
		// Pieces under lb's 16 KiB copy buffer: lb copies them, and its writes to the client,
		// which does not read yet, come up short.
		for p := payload; len(p) > 0; p = p[min(len(p), 12<<10):] {
			if _, err := c.Write(p[:min(len(p), 12<<10)]); err != nil {
				break
			}
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	s := serveOn(t, testConfig(), listenSmallSendBuffer(t), b.addr())
	c := dialSmallWindow(t, s.addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "x")
	waitFor(t, "a stalled flow", func() bool { return stalledFlows(s.Server) > 0 })
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes (%v), want the %d sent, equal", len(got), err, len(payload))
	}
}

// listenFull returns the address of a listener whose accept queue is full: a connect to it
// stays pending, its SYNs dropped.
func listenFull(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // room for one connection
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	dial(t, addr) // takes the room
	return addr
}

// phaseCount counts the connections of s in phase p.
func phaseCount(s *Server, p phase) int {
	n := 0
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil && c.phase == p {
					n++
				}
			}
		})
	}
	return n
}

// TestResetWhileConnectingDoesNotSpin: a client whose head never completes is routed when
// the sniff deadline passes; while the backend dial hangs, the client resets. Nothing can be
// done about it until the dial ends, and the loop must not spin on the reset meanwhile.
func TestResetWhileConnectingDoesNotSpin(t *testing.T) {
	cfg := testConfig()
	cfg.SniffTimeout = 100 * time.Millisecond
	cfg.ConnectTimeout = time.Hour // the dial outlasts the test, however slow the machine
	s := startServer(t, cfg, listenFull(t))
	c := dial(t, s.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	waitFor(t, "the connection routed, its dial pending", func() bool { return phaseCount(s.Server, dialing) == 1 })
	c.SetLinger(0)
	c.Close() // RST

	checkNoSpin(t, "while its only connection waited for a dial")
	if phaseCount(s.Server, dialing) != 1 {
		t.Fatal("the dial ended while the test looked: the test proves nothing")
	}
	// The dial would wait for the hour: cut it. (The cleanup's Shutdown then finds it done.)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := s.Server.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a dial pending: %v, want DeadlineExceeded", err)
	}
}

// TestCopyWithoutAPipeLosesNothing: a loop with no hot pipe that cannot make one (EMFILE) must
// not read what it could not keep: were the write that follows short, a smaller pipe made
// later would take only part of the rest. Run on the loop itself, with a full destination:
// every byte lb took from the source reached the destination or waits in the flow's pipe.
func TestCopyWithoutAPipeLosesNothing(t *testing.T) {
	real := pipe2
	t.Cleanup(func() { pipe2 = real })
	var calls atomic.Int32
	pipe2 = func(fds []int) error {
		if calls.Add(1) == 1 {
			return unix.EMFILE
		}
		if err := real(fds); err != nil {
			return err
		}
		_, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, 4096)
		return err
	}
	s := startServer(t, testConfig())
	// lb's ends are raw descriptors, the peers' are read and written through fds of their own.
	pair := func() [2]int {
		ours, peer := tcpPair(t, dial)
		f, err := peer.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		unix.SetNonblock(fd, true)
		return [2]int{ours, fd}
	}
	src, dst := pair(), pair() // [0]: lb's end, [1]: the peer's
	defer unix.Close(src[1])
	defer unix.Close(dst[1])
	unix.SetsockoptInt(dst[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	unix.SetsockoptInt(dst[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	queued := 0 // in dst before lb writes
	// Fill the destination but for a little room.
	for {
		n, err := unix.Write(dst[0], make([]byte, 512))
		if err != nil {
			break
		}
		queued += n
	}
	n, _ := unix.Read(dst[1], make([]byte, 1024))
	queued -= n
	sent := randomBytes(t, 16<<10)
	if n, err := unix.Write(src[1], sent); n != len(sent) {
		t.Fatalf("wrote %d bytes of %d to the source: %v", n, len(sent), err)
	}
	waitFor(t, "the source's bytes to arrive", func() bool {
		n, _ := unix.IoctlGetInt(src[0], unix.TIOCINQ)
		return n == len(sent)
	})
	// What lb leaves unread stays in the source after the loop closes its end: a duplicate
	// keeps the socket open.
	srcDup, err := unix.Dup(src[0])
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(srcDup)

	l := s.loops[0]
	var kept, inPipe int
	var open, hadPipe bool
	l.call(func() {
		hadPipe = l.pipes.hot != nil
		c := spliceConn(l, end{fd: src[0]}, end{fd: dst[0]})
		if open = l.pump(c, clientSide, false); open {
			kept = c.ends[clientSide].pending
			if p := c.ends[clientSide].pipe; p != nil {
				inPipe, _ = unix.IoctlGetInt(p.r, unix.TIOCINQ)
			}
			l.close(c, nil)
		}
	})
	if hadPipe || calls.Load() == 0 {
		t.Fatalf("the loop had a hot pipe (%v) or asked for none (%d calls): the test proves nothing", hadPipe, calls.Load())
	}
	unread, err := unix.IoctlGetInt(srcDup, unix.TIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte // what the destination's peer got
	for buf := make([]byte, 64<<10); ; {
		n, err := unix.Read(dst[1], buf)
		if n <= 0 || err != nil {
			break
		}
		out = append(out, buf[:n]...)
	}
	delivered := len(out) - queued
	if kept != inPipe {
		t.Fatalf("the flow counts %d bytes kept for the destination, its pipe holds %d", kept, inPipe)
	}
	if took := len(sent) - unread; took != delivered+kept || !bytes.Equal(out[queued:], sent[:delivered]) {
		t.Fatalf("lb took %d bytes from the source: %d reached the destination (in order: %v), %d wait for it; %d are lost (open: %v)",
			took, delivered, bytes.Equal(out[queued:], sent[:max(delivered, 0)]), kept, took-delivered-kept, open)
	}
}

// tcpPair connects two loopback TCP sockets: lb's end as a raw non-blocking descriptor that
// the caller hands to a conn, and the peer's, which dial opens, as a *net.TCPConn.
func tcpPair(t *testing.T, dial func(*testing.T, string) *net.TCPConn) (int, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := dial(t, ln.Addr().String())
	ours, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	f, err := ours.(*net.TCPConn).File() // a duplicate, which outlives ours
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fd, true)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return fd, peer
}

// TestLastBytesLeaveWithTheFIN: when the source's FIN is in, its last bytes and the half-close
// passed on leave in one segment, as HAProxy's mostly do: a Connection: close response then
// costs its client one wake-up and one ACK, not two. A destination that takes only part of
// them still gets every byte, and then the FIN.
func TestLastBytesLeaveWithTheFIN(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int // under copySize: one short read takes it all
		full bool
	}{
		{"the destination takes them all", 60, false},
		{"the destination is full", 15 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, testConfig())
			srcFD, sender := tcpPair(t, dial)
			dialReceiver := dial
			if tc.full {
				dialReceiver = dialSmallWindow
			}
			dstFD, receiver := tcpPair(t, dialReceiver)
			var queued []byte // written to the receiver before: it does not read yet
			if tc.full {
				unix.SetsockoptInt(dstFD, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
				for chunk := make([]byte, 512); ; {
					n, err := unix.Write(dstFD, chunk)
					if err != nil {
						break
					}
					queued = append(queued, chunk[:n]...)
				}
				// A little room: the answer goes in part now, in part later.
				n, _ := receiver.Read(make([]byte, 512))
				queued = queued[n:]
			}
			answer := randomBytes(t, tc.size)
			sender.Write(answer)
			sender.CloseWrite()
			waitFor(t, "the FIN to reach lb's socket", func() bool {
				fds := []unix.PollFd{{Fd: int32(srcFD), Events: unix.POLLRDHUP}}
				n, _ := unix.Poll(fds, 0)
				return n == 1 && fds[0].Revents&unix.POLLRDHUP != 0
			})
			segsOut := func() uint32 {
				info, err := unix.GetsockoptTCPInfo(dstFD, unix.IPPROTO_TCP, unix.TCP_INFO)
				if err != nil {
					t.Fatal(err)
				}
				return info.Segs_out
			}
			before := segsOut()
			var segs uint32
			var eof bool
			var pending int
			var moved uint64
			l := s.loops[0]
			l.call(func() {
				s.active.Add(1)
				s.conns.Add(1)
				c := l.conns.add()
				c.lc = l.stats.listener(nil) // as admit gives it one
				c.ends[clientSide], c.ends[backendSide] = end{fd: srcFD}, end{fd: dstFD}
				c.phase, c.pool = splicing, (*s.pools.Load())[0] // the sweep reads its pool's idle timeout
				if l.pump(c, clientSide, true) {
					segs, eof = segsOut()-before, c.ends[clientSide].eof
					pending, moved = c.ends[clientSide].pending, c.ends[clientSide].moved
					l.rearm(c) // the loop takes it from here
				}
			})
			if tc.full && (eof || moved == 0 || pending == 0) {
				t.Fatalf("the flow ended: %t, with %d bytes written and %d kept; want a full destination to take some now, some later", eof, moved, pending)
			}
			if !tc.full && (!eof || segs != 1) {
				t.Fatalf("the flow ended: %t, in %d segments; want true, in 1 (the bytes with the FIN)", eof, segs)
			}
			want := append(queued, answer...)
			got, err := io.ReadAll(receiver)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the receiver read %d bytes (%v), equal: %t; want all %d, then EOF", len(got), err, bytes.Equal(got, want), len(want))
			}
			receiver.CloseWrite()
			if _, err := io.ReadAll(sender); err != nil {
				t.Fatalf("the sender did not get the receiver's half-close: %v", err)
			}
		})
	}
}

// TestUrgentDataKeepsTheBytesAfterIt: a read or a splice from a TCP socket stops at the
// urgent mark (MSG_OOB) even with bytes behind it, and a splice at the mark moves nothing: it
// returns 0, as at the EOF, or EAGAIN while epoll reports data. Neither may end the stream
// early, and a bulk flow at the mark must not spin. The urgent byte itself is dropped: lb
// does not carry out-of-band data.
func TestUrgentDataKeepsTheBytesAfterIt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before int // bytes before the urgent one: 64 KiB makes the flow bulk
		fin    bool
		rounds int
	}{
		{"small flow, then the FIN", 5, true, 50},
		{"bulk flow, then the FIN", 64 << 10, true, 5},
		{"bulk flow, no FIN yet", 64 << 10, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := randomBytes(t, tc.before)
			want := append(append([]byte(nil), before...), "tail"...)
			closeNow := make(chan struct{})
			b := startBackend(t, func(c *net.TCPConn) {
				c.Read(make([]byte, 512))
				c.Write(before)
				rc, _ := c.SyscallConn()
				rc.Control(func(fd uintptr) { unix.Send(int(fd), []byte("!"), unix.MSG_OOB) })
				c.Write([]byte("tail"))
				if !tc.fin {
					<-closeNow
				}
				c.CloseWrite()
				io.Copy(io.Discard, c)
			})
			var release sync.Once // the backend, even when the test fails before it would
			t.Cleanup(func() { release.Do(func() { close(closeNow) }) })
			s := startServer(t, testConfig(), b.addr())
			for range tc.rounds {
				c := dial(t, s.addr)
				c.SetDeadline(time.Now().Add(5 * time.Second)) // a flow stuck at the mark fails in seconds
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
				got := make([]byte, len(want))
				if n, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("the client read %d bytes (%v), equal: %t; want %d: the %d before the urgent byte and the 4 after it", n, err, bytes.Equal(got, want), len(want), tc.before)
				}
				if !tc.fin {
					checkNoSpin(t, "while its only flow waited at the urgent mark")
					release.Do(func() { close(closeNow) })
				}
				if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
					t.Fatalf("after the answer the client read %q (%v), want the EOF", rest, err)
				}
				c.Close()
			}
		})
	}
}
