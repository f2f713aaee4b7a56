package l4

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
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
	c.SetDeadline(time.Now().Add(20 * time.Second))
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

	const window = 300 * time.Millisecond
	before := cpuTime()
	<-time.After(window)
	if used := cpuTime() - before; used > window/3 {
		t.Errorf("the process used %v of CPU in %v while its only flow waited: a loop spins", used, window)
	}
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
			for _, c := range l.slots {
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

// TestReplayCutShortIsNotRetried: the first backend takes part of the replay of a large head
// and then stalls past the connect deadline, or resets. Bytes already went to that backend:
// another one must not get the rest as if it were the whole stream.
func TestReplayCutShortIsNotRetried(t *testing.T) {
	for name, first := range map[string]func(c *net.TCPConn, release <-chan struct{}){
		"stalls": func(c *net.TCPConn, release <-chan struct{}) { <-release },
		"resets": func(c *net.TCPConn, release <-chan struct{}) {
			time.Sleep(100 * time.Millisecond) // let the replay fill the buffers
			c.SetLinger(0)
		},
	} {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			cut := startBackend(t, func(c *net.TCPConn) { first(c, release) })
			defer close(release) // before the backends' cleanup waits for their handlers
			live := startBackend(t, echo)
			cfg := testConfig()
			cfg.MaxHeaderBytes = 16 << 20
			cfg.ConnectTimeout = 200 * time.Millisecond
			s := startServer(t, cfg, cut.addr(), live.addr())

			head := []byte("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + strings.Repeat("x", 12<<20) + "\r\n\r\n")
			c := dial(t, s.addr)
			wrote := make(chan struct{})
			go func() { defer close(wrote); c.Write(head); c.CloseWrite() }()
			got, _ := io.ReadAll(c) // an error (a reset) is a fine answer; a wrong stream is not
			c.Close()
			<-wrote
			if len(got) > 0 && !bytes.Equal(got, head) {
				t.Fatalf("read %d bytes that are not the %d sent (they start %q)", len(got), len(head), got[:min(len(got), 20)])
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
			for _, c := range l.slots {
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
	cfg.SniffTimeout = 20 * time.Millisecond
	cfg.ConnectTimeout = 700 * time.Millisecond
	s := startServer(t, cfg, listenFull(t))
	c := dial(t, s.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	waitFor(t, "the connection routed, its dial pending", func() bool { return phaseCount(s.Server, connecting) == 1 })
	c.SetLinger(0)
	c.Close() // RST

	const window = 300 * time.Millisecond
	before := cpuTime()
	<-time.After(window)
	if used := cpuTime() - before; used > window/3 {
		t.Errorf("the process used %v of CPU in %v while its only connection waited for a dial: a loop spins", used, window)
	}
	if phaseCount(s.Server, connecting) != 1 {
		t.Fatal("the dial ended within the window: the test proves nothing")
	}
}

// TestCopyWithoutAPipeLosesNothing: a loop with no hot pipe that cannot make one (EMFILE) must
// not read what it could not keep: were the write that follows short, a smaller pipe made
// later would take only part of the rest. Run on the loop itself, with a full destination.
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
	pair := func() [2]int {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		return [2]int{fds[0], fds[1]}
	}
	src, dst := pair(), pair() // [0]: lb's end, [1]: the peer's
	defer unix.Close(src[1])
	defer unix.Close(dst[1])
	unix.SetsockoptInt(dst[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	for { // fill the destination but for a little room
		if _, err := unix.Write(dst[0], make([]byte, 512)); err != nil {
			break
		}
	}
	unix.Read(dst[1], make([]byte, 1024))
	unix.Write(src[1], randomBytes(t, 16<<10))

	l := s.loops[0]
	var kept, inPipe int
	var open bool
	l.call(func() {
		s.active.Add(1)
		s.conns.Add(1)
		c := l.newConn()
		c.ends[client], c.ends[backend] = end{fd: src[0]}, end{fd: dst[0]}
		c.phase = splicing
		if open = l.pump(c, client, false); open {
			kept = c.ends[client].pending
			if p := c.ends[client].pipe; p != nil {
				inPipe, _ = unix.IoctlGetInt(p.r, unix.TIOCINQ)
			}
			l.close(c, nil)
		}
	})
	if open && kept != inPipe {
		t.Fatalf("the flow counts %d bytes kept for the destination, its pipe holds %d", kept, inPipe)
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
				c := l.newConn()
				c.ends[client], c.ends[backend] = end{fd: srcFD}, end{fd: dstFD}
				c.phase = splicing
				if l.pump(c, client, true) {
					segs, eof = segsOut()-before, c.ends[client].eof
					pending, moved = c.ends[client].pending, c.ends[client].moved
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
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
				got := make([]byte, len(want))
				if n, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("the client read %d bytes (%v), equal: %t; want %d: the %d before the urgent byte and the 4 after it", n, err, bytes.Equal(got, want), len(want), tc.before)
				}
				if !tc.fin {
					const window = 300 * time.Millisecond
					start := cpuTime()
					<-time.After(window)
					if used := cpuTime() - start; used > window/3 {
						t.Errorf("the process used %v of CPU in %v while its only flow waited at the urgent mark: a loop spins", used, window)
					}
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
