package l4

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRingBuffersRunDry: with 2 buffers a loop and 32 flows at once, each echoing 256 KiB,
// receives find the buffer ring empty (ENOBUFS) over and over; each such end receives again
// once a buffer comes back, and every byte arrives, in order.
func TestRingBuffersRunDry(t *testing.T) {
	cfg := testConfig()
	cfg.Engine = EngineUring
	if _, err := resolveEngine(EngineUring); err != nil {
		t.Skip(err)
	}
	defer func(n int) { ringBuffers = n }(ringBuffers)
	ringBuffers = 2
	s := startServer(t, cfg, startBackend(t, echo).addr())
	const flows, size = 32, 256 << 10
	var wg sync.WaitGroup
	errs := make(chan string, flows)
	for range flows {
		payload := randomBytes(t, size)
		c := dial(t, s.addr)
		c.SetDeadline(time.Now().Add(2 * time.Second)) // a flow that stalls fails the test, well before its deadline
		wg.Go(func() {
			writeErr := writeThenHalfClose(c, payload)
			got, err := io.ReadAll(c)
			if werr := <-writeErr; err == nil {
				err = werr
			}
			if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
				errs <- fmt.Sprintf("a flow got %d bytes, different from the %d sent (%v)", len(got), size, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	waitFor(t, "every buffer back", func() bool { st := s.Stats(); return st.Active == 0 && st.BuffersHeld == 0 })
	if s.Stats().BufferWaits == 0 {
		t.Error("no receive found the buffer ring empty: the test did not test that")
	}
}

// TestKeepAliveAllocatesNothing: 10,000 round trips on one spliced connection cost lb no
// allocation, on the engine LB_ENGINE names. The client and the backend use raw system calls
// and buffers made once, so the process's count of allocations is lb's.
func TestKeepAliveAllocatesNothing(t *testing.T) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(ln, 8)
	sa, _ := unix.Getsockname(ln)
	port := sa.(*unix.SockaddrInet4).Port
	go func() { // the backend: echoes what comes
		fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EINTR {
				continue
			}
			if n <= 0 || err != nil {
				return
			}
			unix.Write(fd, buf[:n])
		}
	}()
	s := startServer(t, testConfig(), fmt.Sprintf("127.0.0.1:%d", port))
	lbAddr := s.addr
	_, lbPort, _ := net.SplitHostPort(lbAddr)
	p, _ := strconv.Atoi(lbPort)
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	if err := unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: p}); err != nil {
		t.Fatal(err)
	}
	msg, buf := []byte("GET / HTTP/1.1\r\nHost: t\r\n\r\n"), make([]byte, 4096)
	roundTrips := func(n int) {
		for range n {
			if _, err := unix.Write(c, msg); err != nil { // 28 bytes: whole, or an error
				t.Fatal(err)
			}
			for got := 0; got < len(msg); {
				k, err := unix.Read(c, buf[got:])
				if err == unix.EINTR { // the runtime's preemption signal
					continue
				}
				if k <= 0 || err != nil {
					t.Fatalf("read %d after %d bytes: %v", k, got, err)
				}
				got += k
			}
		}
	}
	roundTrips(1000) // sniffed, routed, spliced; the loop's spares made
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 10000
	roundTrips(n)
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.01 {
		t.Errorf("%d allocations over %d keep-alive round trips on %s: %.3f a request, want 0", after.Mallocs-before.Mallocs, n, s.Engine(), per)
	} else {
		t.Logf("%d allocations over %d keep-alive round trips on %s", after.Mallocs-before.Mallocs, n, s.Engine())
	}
}
