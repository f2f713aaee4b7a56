package uring

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// escaped holds what tests hand to the kernel, so it lives on the heap, where the runtime
// does not move it, rather than on a stack that may move (tests do not run in parallel).
var escaped []any

func heapBytes(b []byte) []byte {
	c := append([]byte(nil), b...)
	escaped = append(escaped, c)
	return c
}

func heapTimespec(ns int64) *Timespec {
	ts := new(Timespec)
	*ts = NewTimespec(ns)
	escaped = append(escaped, ts)
	return ts
}

// newRing sets up a ring or skips the test where io_uring is unavailable.
func newRing(t *testing.T, o Options) *Ring {
	t.Helper()
	r, err := New(o)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// tcpPair is a connected pair of blocking loopback TCP sockets, closed at cleanup.
func tcpPair(t *testing.T) (int, int) {
	t.Helper()
	ln := listener(t)
	sa, err := unix.Getsockname(ln)
	if err != nil {
		t.Fatal(err)
	}
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c) })
	if err := unix.Connect(c, sa); err != nil {
		t.Fatal(err)
	}
	s, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	return c, s
}

// listener is a blocking listening socket on a free loopback port, closed at cleanup.
func listener(t *testing.T) int {
	t.Helper()
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ln) })
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 64); err != nil {
		t.Fatal(err)
	}
	return ln
}

// reap waits until n completions arrived (or the deadline passed) and returns them.
func reap(t *testing.T, r *Ring, n int) []CQE {
	t.Helper()
	var got []CQE
	buf := make([]CQE, 64)
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d completions by the deadline: %+v", len(got), n, got)
		}
		k, err := r.WaitCQEs(buf, 1)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:k]...)
	}
	return got
}

func nop(t *testing.T, r *Ring, ud uint64) {
	t.Helper()
	s := r.GetSQE()
	if s == nil {
		t.Fatalf("SQ full at user data %d", ud)
	}
	s.PrepNop()
	s.UserData = ud
}

// TestSQWrapAround submits far more SQEs than the ring holds, in batches that do not
// divide its size, so the free-running indexes wrap the mask many times.
func TestSQWrapAround(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	if r.SQEntries() != 8 {
		t.Fatalf("SQ entries %d, want 8", r.SQEntries())
	}
	next := uint64(0)
	for batch := range 40 {
		size := 1 + batch%7
		for range size {
			nop(t, r, next)
			next++
		}
		first := next - uint64(size)
		if n, err := r.Submit(); err != nil || n != size {
			t.Fatalf("batch %d: submitted %d, %v; want %d", batch, n, err, size)
		}
		for i, c := range reap(t, r, size) {
			if c.UserData != first+uint64(i) || c.Res != 0 {
				t.Fatalf("batch %d completion %d: %+v, want user data %d res 0", batch, i, c, first+uint64(i))
			}
		}
	}
	if next < 10*uint64(r.SQEntries()) {
		t.Fatalf("only %d SQEs went through a ring of %d", next, r.SQEntries())
	}
}

// TestSQFull: GetSQE says nil when every slot is handed out and not consumed; a Submit
// frees the slots.
func TestSQFull(t *testing.T) {
	r := newRing(t, Options{Entries: 4})
	for i := range 4 {
		nop(t, r, uint64(i))
	}
	if s := r.GetSQE(); s != nil {
		t.Fatal("GetSQE on a full SQ returned an entry")
	}
	if r.SQReady() != 4 {
		t.Fatalf("SQReady %d, want 4", r.SQReady())
	}
	if n, err := r.Submit(); err != nil || n != 4 {
		t.Fatalf("Submit = %d, %v; want 4", n, err)
	}
	if s := r.GetSQE(); s == nil {
		t.Fatal("GetSQE after Submit still nil")
	} else {
		s.PrepNop()
		s.UserData = 4
	}
	if got := reap(t, r, 5); len(got) != 5 {
		t.Fatalf("got %d completions, want 5", len(got))
	}
}

// TestCQOverflow completes four times more requests than the CQ holds without reaping:
// the kernel parks the excess (IORING_SQ_CQ_OVERFLOW), drops none, and the reaper's next
// enter with GETEVENTS brings every one of them, in order.
func TestCQOverflow(t *testing.T) {
	r := newRing(t, Options{Entries: 4, CQEntries: 4})
	if r.Features()&FeatNoDrop == 0 {
		t.Skip("kernel without IORING_FEAT_NODROP")
	}
	total := 4 * int(r.CQEntries())
	for i := range total {
		s := r.GetSQE()
		if s == nil {
			if _, err := r.Submit(); err != nil {
				t.Fatal(err)
			}
			s = r.GetSQE()
		}
		s.PrepNop()
		s.UserData = uint64(i)
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	if r.CQReady() != r.CQEntries() {
		t.Fatalf("CQ holds %d, want it full at %d", r.CQReady(), r.CQEntries())
	}
	if !r.CQOverflowPending() {
		t.Fatal("IORING_SQ_CQ_OVERFLOW not set with more completions than CQ slots")
	}
	got := reap(t, r, total)
	for i, c := range got {
		if c.UserData != uint64(i) {
			t.Fatalf("completion %d has user data %d", i, c.UserData)
		}
	}
	if r.CQOverflowPending() || r.CQOverflowed() != 0 {
		t.Fatalf("after reaping: overflow pending %v, dropped %d", r.CQOverflowPending(), r.CQOverflowed())
	}
}

// TestEAGAIN: a receive with MSG_DONTWAIT on an empty socket surfaces -EAGAIN instead of
// waiting for data.
func TestEAGAIN(t *testing.T) {
	r := newRing(t, Options{Entries: 4})
	a, _ := tcpPair(t)
	b := heapBytes(make([]byte, 16))
	s := r.GetSQE()
	s.PrepRecv(a, b, unix.MSG_DONTWAIT)
	s.UserData = 1
	c := reap(t, r, 1)[0]
	if !errors.Is(c.Err(), unix.EAGAIN) {
		t.Fatalf("recv on an empty socket with MSG_DONTWAIT: res %d (%v), want -EAGAIN", c.Res, c.Err())
	}
	runtime.KeepAlive(b)
}

// TestECANCELED: a receive that never gets data ends with -ECANCELED both when its linked
// timeout fires and when it is cancelled by user data.
func TestECANCELED(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	a, _ := tcpPair(t)
	b := heapBytes(make([]byte, 16))
	ts := heapTimespec(int64(20 * time.Millisecond))

	s := r.GetSQE()
	s.PrepRecv(a, b, 0)
	s.UserData = 1
	s.Flags |= SQEIOLink
	s = r.GetSQE()
	s.PrepLinkTimeout(ts)
	s.UserData = 2
	byUD := map[uint64]CQE{}
	for _, c := range reap(t, r, 2) {
		byUD[c.UserData] = c
	}
	if c := byUD[1]; !errors.Is(c.Err(), unix.ECANCELED) {
		t.Fatalf("recv under an expired link timeout: %+v, want -ECANCELED", c)
	}
	if c := byUD[2]; !errors.Is(c.Err(), unix.ETIME) {
		t.Fatalf("link timeout: %+v, want -ETIME", c)
	}

	s = r.GetSQE()
	s.PrepRecv(a, b, 0)
	s.UserData = 3
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	s = r.GetSQE()
	s.PrepCancel(3)
	s.UserData = 4
	byUD = map[uint64]CQE{}
	for _, c := range reap(t, r, 2) {
		byUD[c.UserData] = c
	}
	if c := byUD[3]; !errors.Is(c.Err(), unix.ECANCELED) {
		t.Fatalf("cancelled recv: %+v, want -ECANCELED", c)
	}
	if c := byUD[4]; c.Res != 0 {
		t.Fatalf("cancel request: %+v, want res 0", c)
	}
	runtime.KeepAlive(b)
	runtime.KeepAlive(ts)
}

// TestShortSend: a send larger than what the socket buffers can take while the peer does
// not read completes with a short count, and the rest goes out with a second send once
// the peer reads.
func TestShortSend(t *testing.T) {
	r := newRing(t, Options{Entries: 4})
	a, b := tcpPair(t)
	if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	s := r.GetSQE()
	s.PrepSend(a, msg, 0)
	s.UserData = 1
	c := reap(t, r, 1)[0]
	if c.Res <= 0 || int(c.Res) >= len(msg) {
		t.Fatalf("send of %d bytes into a stalled peer: res %d, want a short positive count", len(msg), c.Res)
	}
	sent := int(c.Res)
	// The rest may go in bigger steps.
	if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
		t.Fatal(err)
	}

	// The peer drains in a goroutine this test owns and waits for.
	got := make(chan []byte, 1)
	go func() {
		var all []byte
		p := make([]byte, 64<<10)
		for len(all) < len(msg) {
			n, err := unix.Read(b, p)
			if n <= 0 || err != nil {
				break
			}
			all = append(all, p[:n]...)
		}
		got <- all
	}()
	for sent < len(msg) {
		s := r.GetSQE()
		s.PrepSend(a, msg[sent:], 0)
		s.UserData = 2
		c := reap(t, r, 1)[0]
		if c.Res <= 0 {
			t.Fatalf("resend: %+v", c)
		}
		sent += int(c.Res)
	}
	select {
	case all := <-got:
		if !bytes.Equal(all, msg) {
			t.Fatalf("peer got %d bytes, not the %d sent", len(all), len(msg))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer did not receive everything by the deadline")
	}
}

// TestMultishotAcceptAndRecv: one accept SQE yields a CQE per connection and stays armed;
// one multishot recv from a buffer ring yields a CQE per arrival naming its buffer, ends
// with -ENOBUFS when every buffer is held, and picks up again after buffers are recycled.
func TestMultishotAcceptAndRecv(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	ln := listener(t)
	sa, _ := unix.Getsockname(ln)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*unix.SockaddrInet4).Port}

	s := r.GetSQE()
	s.PrepMultishotAccept(ln, unix.SOCK_CLOEXEC)
	s.UserData = 7
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for range 3 {
		c, err := net.DialTCP("tcp4", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	var fds []int
	for _, c := range reap(t, r, 3) {
		if c.UserData != 7 || c.Res < 0 || !c.More() {
			t.Fatalf("multishot accept CQE %+v: want a descriptor and F_MORE", c)
		}
		fds = append(fds, int(c.Res))
		defer unix.Close(int(c.Res))
	}

	br, err := r.RegisterBufRing(1, 4, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	s = r.GetSQE()
	s.PrepMultishotRecv(fds[0], br.Group())
	s.UserData = 9
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	// Which accepted fd belongs to which client is the kernel's order; find the writer
	// for fds[0] by its address.
	peer, err := unix.Getpeername(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	var w net.Conn
	for _, c := range clients {
		if c.LocalAddr().(*net.TCPAddr).Port == peer.(*unix.SockaddrInet4).Port {
			w = c
		}
	}
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c := reap(t, r, 1)[0]
	bid, ok := c.BufferID()
	if c.Res != 5 || !ok || !c.More() || string(br.Buf(bid, int(c.Res))) != "hello" {
		t.Fatalf("multishot recv CQE %+v (buffer %d %v)", c, bid, ok)
	}
	held := []uint16{bid}

	// 3 buffers of 8 bytes are left; 40 bytes need 5: the group runs dry.
	want := "abcdefghijklmnopqrstuvwxyz0123456789ABCD"
	if _, err := w.Write([]byte(want)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	ended := false
	deadline := time.Now().Add(5 * time.Second)
	for !ended && time.Now().Before(deadline) {
		for _, c := range reap(t, r, 1) {
			if c.Res < 0 {
				if !errors.Is(c.Err(), unix.ENOBUFS) || c.More() {
					t.Fatalf("recv with no buffers left: %+v, want -ENOBUFS and no F_MORE", c)
				}
				ended = true
				continue
			}
			bid, _ := c.BufferID()
			got = append(got, br.Buf(bid, int(c.Res))...)
			held = append(held, bid)
		}
	}
	if !ended {
		t.Fatal("multishot recv did not end with -ENOBUFS")
	}
	for _, b := range held {
		br.Add(b)
	}
	br.Publish()
	s = r.GetSQE()
	s.PrepMultishotRecv(fds[0], br.Group())
	s.UserData = 10
	for len(got) < len(want) {
		for _, c := range reap(t, r, 1) {
			if c.Res <= 0 {
				t.Fatalf("rearmed recv: %+v", c)
			}
			bid, _ := c.BufferID()
			got = append(got, br.Buf(bid, int(c.Res))...)
			br.Recycle(bid)
		}
	}
	if string(got) != want {
		t.Fatalf("received %q, want %q", got, want)
	}
}

// TestConnectSendClose drives a client side through the ring: connect, send, close; a
// Go listener sees the bytes and then EOF. The ring runs with SINGLE_ISSUER and
// DEFER_TASKRUN, so the test goroutine is locked to its thread.
func TestConnectSendClose(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := newRing(t, Options{Entries: 8, Flags: SetupSingleIssuer | SetupDeferTaskrun})
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		var all []byte
		p := make([]byte, 256)
		for {
			n, err := c.Read(p)
			all = append(all, p[:n]...)
			if err != nil {
				break
			}
		}
		got <- all
	}()

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	port := ln.Addr().(*net.TCPAddr).Port
	sa.Port = uint16(port>>8) | uint16(port&0xff)<<8 // network order
	s := r.GetSQE()
	s.PrepConnect(fd, &sa)
	s.UserData = 1
	s.Flags |= SQEIOLink
	msg := heapBytes([]byte("ping over io_uring"))
	s = r.GetSQE()
	s.PrepSend(fd, msg, 0)
	s.UserData = 2
	s.Flags |= SQEIOLink
	s = r.GetSQE()
	s.PrepClose(fd)
	s.UserData = 3
	for _, c := range reap(t, r, 3) {
		if c.Res < 0 {
			t.Fatalf("linked connect/send/close: %+v (%v)", c, c.Err())
		}
	}
	select {
	case b := <-got:
		if string(b) != string(msg) {
			t.Fatalf("listener got %q, want %q", b, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("listener saw no EOF by the deadline")
	}
}

// TestRegisteredFiles: a send names a registered slot instead of a descriptor; once the
// slot is emptied the same SQE fails with -EBADF.
func TestRegisteredFiles(t *testing.T) {
	r := newRing(t, Options{Entries: 4})
	a, b := tcpPair(t)
	if err := r.RegisterFiles([]int32{-1, -1}); err != nil {
		t.Fatal(err)
	}
	if err := r.UpdateFiles(1, []int32{int32(a)}); err != nil {
		t.Fatal(err)
	}
	msg := heapBytes([]byte("fixed"))
	send := func() CQE {
		s := r.GetSQE()
		s.PrepSend(1, msg, 0)
		s.Flags |= SQEFixedFile
		s.UserData = 1
		return reap(t, r, 1)[0]
	}
	if c := send(); c.Res != int32(len(msg)) {
		t.Fatalf("send on slot 1: %+v (%v)", c, c.Err())
	}
	p := make([]byte, 16)
	if n, err := unix.Read(b, p); err != nil || string(p[:n]) != "fixed" {
		t.Fatalf("peer read %q, %v", p[:n], err)
	}
	if err := r.UpdateFiles(1, []int32{-1}); err != nil {
		t.Fatal(err)
	}
	if c := send(); !errors.Is(c.Err(), unix.EBADF) {
		t.Fatalf("send on an emptied slot: %+v, want -EBADF", c)
	}
}

// TestWaitFor returns after the timeout with nothing, and at once when a completion is
// there; WaitCQEsBriefly, the same without telling the scheduler, alike.
func TestWaitFor(t *testing.T) {
	for name, wait := range map[string]func(*Ring, []CQE, uint32, int64) (int, error){
		"WaitCQEsFor": (*Ring).WaitCQEsFor, "WaitCQEsBriefly": (*Ring).WaitCQEsBriefly,
	} {
		r := newRing(t, Options{Entries: 8})
		if r.Features()&FeatExtArg == 0 {
			t.Skip("the kernel has no IORING_FEAT_EXT_ARG")
		}
		buf := make([]CQE, 8)
		start := time.Now()
		if n, err := wait(r, buf, 1, int64(20*time.Millisecond)); err != nil || n != 0 {
			t.Fatalf("%s, an empty ring: %d completions, %v", name, n, err)
		}
		// A signal may end a wait early (EINTR); it never outlasts its bound.
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s: a 20 ms wait took %v", name, d)
		}
		nop(t, r, 7)
		if n, err := wait(r, buf, 1, int64(time.Minute)); err != nil || n != 1 || buf[0].UserData != 7 {
			t.Fatalf("%s, a nop: %d completions %+v, %v", name, n, buf[:n], err)
		}
	}
}

// TestPollAndRemove: a poll completes with the ready events; a removed one with -ECANCELED.
func TestPollAndRemove(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	a, b := tcpPair(t)
	s := r.GetSQE()
	s.PrepPollAdd(a, unix.EPOLLIN)
	s.UserData = 1
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	s = r.GetSQE()
	s.PrepPollRemove(1)
	s.UserData = 2
	got := reap(t, r, 2)
	for _, c := range got {
		if c.UserData == 1 && c.Err() != unix.ECANCELED {
			t.Fatalf("the removed poll completed with %v", c.Err())
		}
	}
	s = r.GetSQE()
	s.PrepPollAdd(a, unix.EPOLLIN)
	s.UserData = 3
	if _, err := unix.Write(b, []byte("x")); err != nil {
		t.Fatal(err)
	}
	got = reap(t, r, 1)
	if got[0].UserData != 3 || got[0].Res&unix.EPOLLIN == 0 {
		t.Fatalf("poll of a readable socket: %+v", got[0])
	}
}

// TestRecvSelectTakesABufferOnlyWhenBytesCome: a receive waiting on a silent socket leaves
// every buffer in the group; the one that gets bytes names its buffer.
func TestRecvSelectTakesABufferOnlyWhenBytesCome(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	br, err := r.RegisterBufRing(1, 2, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	a, b := tcpPair(t)
	c, d := tcpPair(t)
	for i, fd := range []int{a, c} {
		s := r.GetSQE()
		s.PrepRecvSelect(fd, 1)
		s.UserData = uint64(i + 1)
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	// Two receives wait and the group has two buffers: if a waiting receive held one, the
	// third would find none.
	x, y := tcpPair(t)
	s := r.GetSQE()
	s.PrepRecvSelect(x, 1)
	s.UserData = 3
	unix.Write(y, []byte("hello"))
	got := reap(t, r, 1)
	bid, ok := got[0].BufferID()
	if got[0].UserData != 3 || !ok || string(br.Buf(bid, int(got[0].Res))) != "hello" {
		t.Fatalf("receive: %+v", got[0])
	}
	_, _ = b, d
}

// TestReadEventfd: a read of an eventfd completes when another thread writes it.
func TestReadEventfd(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	b := heapBytes(make([]byte, 8))
	s := r.GetSQE()
	s.PrepRead(efd, b)
	s.UserData = 9
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	go unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	got := reap(t, r, 1)
	if got[0].UserData != 9 || got[0].Res != 8 || b[0] != 1 {
		t.Fatalf("eventfd read: %+v %v", got[0], b)
	}
}
