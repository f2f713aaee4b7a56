package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// With -cpu, the harness also times the bare calls: the system calls a proxy that moves
// bytes with read and write cannot do without, made on loopback by one goroutine that finds
// every byte already there. No epoll, no wake-ups, no user-space work, so they show how much
// of a proxy's cost per request is the kernel's TCP path itself, against the budget -cpu
// prints. Not a strict floor: in the real pipeline some receive work moves to the process
// that holds the socket's lock at the time (the socket backlog), and ticks are not a clock.
//
//	keepalive: read the request, write it to the backend, read the response, write it back
//	close:     accept, read, socket + connect, write, read the response and its EOF, write
//	           it back, shutdown, read the client's EOF, close both sockets

var (
	bareRequest  = []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	bareResponse = bytes.Repeat([]byte{'x'}, 160) // the size of the backends' answer
)

const (
	bareConns   = 50 // keep-alive connections, as wrk opens
	bareBatches = 5  // batches of each scenario; the median one is reported
)

// bareCosts returns the median cost in µs of the proxy's bare calls per keep-alive request
// and per new connection.
func bareCosts(keepaliveRounds, closeConns int) (perRequest, perConn float64, err error) {
	var ka, cl []float64
	for range bareBatches {
		d, err := bareKeepalive(keepaliveRounds)
		if err != nil {
			return 0, 0, fmt.Errorf("keepalive bare calls: %w", err)
		}
		ka = append(ka, d)
		if d, err = bareClose(closeConns); err != nil {
			return 0, 0, fmt.Errorf("close bare calls: %w", err)
		}
		cl = append(cl, d)
	}
	slices.Sort(ka)
	slices.Sort(cl)
	return ka[len(ka)/2], cl[len(cl)/2], nil
}

// bareKeepalive sends rounds requests on each of bareConns client → proxy → backend paths
// and returns the µs per request spent in the proxy's four calls.
func bareKeepalive(rounds int) (float64, error) {
	front, back, err := listenerPair()
	if err != nil {
		return 0, err
	}
	defer unix.Close(front.fd)
	defer unix.Close(back.fd)
	type path struct{ client, proxyIn, proxyOut, server int }
	paths := make([]path, 0, bareConns)
	defer func() {
		for _, p := range paths {
			for _, fd := range []int{p.client, p.proxyIn, p.proxyOut, p.server} {
				unix.Close(fd)
			}
		}
	}()
	for range bareConns {
		var p path
		if p.client, p.proxyIn, err = front.pair(); err != nil {
			return 0, err
		}
		if p.proxyOut, p.server, err = back.pair(); err != nil {
			unix.Close(p.client)
			unix.Close(p.proxyIn)
			return 0, err
		}
		paths = append(paths, p)
	}
	buf := make([]byte, 16<<10)
	var spent time.Duration
	for range rounds {
		for _, p := range paths {
			if err := writeAll(p.client, bareRequest); err != nil {
				return 0, err
			}
			t := time.Now()
			n, err := readSome(p.proxyIn, buf)
			if err == nil {
				err = writeAll(p.proxyOut, buf[:n])
			}
			spent += time.Since(t)
			if err == nil {
				err = exchange(p.server, buf, len(bareRequest), bareResponse)
			}
			if err != nil {
				return 0, err
			}
			t = time.Now()
			n, err = readSome(p.proxyOut, buf)
			if err == nil {
				err = writeAll(p.proxyIn, buf[:n])
			}
			spent += time.Since(t)
			if err == nil {
				err = readFull(p.client, buf, len(bareResponse))
			}
			if err != nil {
				return 0, err
			}
		}
	}
	return float64(spent.Nanoseconds()) / 1e3 / float64(rounds*bareConns), nil
}

// bareClose proxies conns requests, each on a new client and a new backend connection,
// the backend closing after its response (Connection: close), and returns the µs per
// connection spent in the proxy's calls.
func bareClose(conns int) (float64, error) {
	front, back, err := listenerPair()
	if err != nil {
		return 0, err
	}
	defer unix.Close(front.fd)
	defer unix.Close(back.fd)
	buf := make([]byte, 16<<10)
	var spent time.Duration
	for range conns {
		d, err := closeOne(front, back, buf)
		if err != nil {
			return 0, err
		}
		spent += d
	}
	return float64(spent.Nanoseconds()) / 1e3 / float64(conns), nil
}

// closeOne proxies one request over new connections and returns the time the proxy's calls
// took.
func closeOne(front, back *loopbackListener, buf []byte) (spent time.Duration, err error) {
	client, proxyIn, proxyOut, server := -1, -1, -1, -1
	defer func() {
		for _, fd := range []*int{&client, &proxyIn, &proxyOut, &server} {
			closeFD(fd)
		}
	}()
	if client, err = dialLoopback(front.addr); err != nil {
		return 0, err
	}
	if err = writeAll(client, bareRequest); err != nil {
		return 0, err
	}

	t := time.Now()
	proxyIn, err = front.accept()
	var n int
	if err == nil {
		n, err = readSome(proxyIn, buf)
	}
	if err == nil {
		proxyOut, err = tcpSocket()
	}
	spent += time.Since(t)
	if err == nil {
		err = setTimeouts(proxyOut) // the harness's safety net, not a proxy's call
	}
	t = time.Now()
	if err == nil {
		err = connect(proxyOut, back.addr)
	}
	if err == nil {
		err = writeAll(proxyOut, buf[:n])
	}
	spent += time.Since(t)
	if err == nil {
		server, err = back.accept()
	}
	if err == nil {
		err = exchange(server, buf, len(bareRequest), bareResponse)
		closeFD(&server)
	}
	if err != nil {
		return 0, err
	}

	t = time.Now()
	n, err = readSome(proxyOut, buf)
	if err == nil {
		err = readEOF(proxyOut, buf[n:])
	}
	if err == nil {
		err = writeAll(proxyIn, buf[:n])
	}
	if err == nil {
		err = unix.Shutdown(proxyIn, unix.SHUT_WR)
	}
	spent += time.Since(t)
	if err == nil {
		err = readFull(client, buf, len(bareResponse))
	}
	if err == nil {
		err = readEOF(client, buf)
		closeFD(&client)
	}
	if err != nil {
		return 0, err
	}

	t = time.Now()
	err = readEOF(proxyIn, buf)
	closeFD(&proxyIn)
	closeFD(&proxyOut)
	spent += time.Since(t)
	return spent, err
}

// closeFD closes *fd once.
func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// The bare calls' sockets block, with a timeout: on loopback every timed call finds its bytes
// or its peer's handshake already there, and a bug shows as an error rather than a hang.
const bareTimeout = 2 * time.Second

type loopbackListener struct {
	fd   int
	addr unix.Sockaddr
}

// listenerPair opens the proxy's listener and the backend's.
func listenerPair() (front, back *loopbackListener, err error) {
	if front, err = newLoopbackListener(); err != nil {
		return nil, nil, err
	}
	if back, err = newLoopbackListener(); err != nil {
		unix.Close(front.fd)
		return nil, nil, err
	}
	return front, back, nil
}

func newLoopbackListener() (*loopbackListener, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	l := &loopbackListener{fd: fd}
	err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	if err == nil {
		err = unix.Listen(fd, bareConns)
	}
	if err == nil {
		l.addr, err = unix.Getsockname(fd)
	}
	if err == nil {
		err = setTimeouts(fd)
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return l, nil
}

// accept takes a connection without reading the peer's address, as lb does. The accepted
// socket inherits TCP_NODELAY and the timeouts from the listener, so it needs no setsockopt.
func (l *loopbackListener) accept() (int, error) {
	return ignoringEINTR(func() (int, error) {
		fd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(l.fd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	})
}

// pair connects a new client to l: its socket and the accepted one.
func (l *loopbackListener) pair() (dialed, accepted int, err error) {
	if dialed, err = dialLoopback(l.addr); err != nil {
		return -1, -1, err
	}
	if accepted, err = l.accept(); err != nil {
		unix.Close(dialed)
		return -1, -1, err
	}
	return dialed, accepted, nil
}

func dialLoopback(addr unix.Sockaddr) (int, error) {
	fd, err := tcpSocket()
	if err != nil {
		return -1, err
	}
	err = setTimeouts(fd)
	if err == nil {
		err = connect(fd, addr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// tcpSocket is a new TCP socket with TCP_NODELAY, as a proxy dials its backends.
func tcpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// connect is connect(2), waiting for the handshake if a signal interrupted the call.
func connect(fd int, addr unix.Sockaddr) error {
	err := unix.Connect(fd, addr)
	if err != unix.EINTR {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	n, err := ignoringEINTR(func() (int, error) { return unix.Poll(pfd, int(bareTimeout.Milliseconds())) })
	if err == nil && n == 0 {
		err = unix.ETIMEDOUT
	}
	if err != nil {
		return err
	}
	errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if errno != 0 {
		return unix.Errno(errno)
	}
	return nil
}

// ignoringEINTR retries a call that a signal interrupted. Go's runtime sends SIGURG to
// preempt goroutines, and Linux does not restart a socket call that has a timeout
// (SO_RCVTIMEO, SO_SNDTIMEO) after a signal, whatever SA_RESTART says.
func ignoringEINTR(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if err != unix.EINTR {
			return n, err
		}
	}
}

func setTimeouts(fd int) error {
	tv := unix.NsecToTimeval(bareTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

// readSome is one read, as a proxy makes when epoll says a socket is readable.
func readSome(fd int, buf []byte) (int, error) {
	n, err := ignoringEINTR(func() (int, error) { return unix.Read(fd, buf) })
	if err == nil && n == 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func readFull(fd int, buf []byte, want int) error {
	for got := 0; got < want; {
		n, err := readSome(fd, buf[got:want])
		if err != nil {
			return err
		}
		got += n
	}
	return nil
}

func readEOF(fd int, buf []byte) error {
	n, err := ignoringEINTR(func() (int, error) { return unix.Read(fd, buf) })
	if err == nil && n != 0 {
		err = fmt.Errorf("%d bytes where EOF was due", n)
	}
	return err
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := ignoringEINTR(func() (int, error) { return unix.Write(fd, b) })
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// exchange is the backend's part: read a request of size bytes, answer with resp.
func exchange(fd int, buf []byte, size int, resp []byte) error {
	if err := readFull(fd, buf, size); err != nil {
		return err
	}
	return writeAll(fd, resp)
}
