// Package probetarget runs loopback listeners for tests of health probes: they accept a
// connection, note its first bytes (a PROXY header, an HTTP check) and close it.
package probetarget

import (
	"net"
	"testing"
	"time"
)

// Listen starts n listeners on 127.0.0.1 and returns their addresses, and a channel that
// hears the first bytes (up to 64, within 100 ms; "" if none came) of each connection they
// accept, while it has room. They are closed, and their goroutines waited for, when the test
// ends.
func Listen(t testing.TB, n int) (addrs []string, first chan string) {
	t.Helper()
	first = make(chan string, 100)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				buf := make([]byte, 64)
				k, _ := c.Read(buf)
				select {
				case first <- string(buf[:k]):
				default:
				}
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close(); <-done })
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, first
}

// Refused returns a loopback address where nothing listens.
func Refused(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
