// Package freeport finds loopback ports for servers that a test starts as other processes
// (nginx, redis-server), which must be told their port: one that was free a moment ago.
// Servers in the test's own process listen on port 0 instead.
package freeport

import (
	"net"
	"testing"
)

// Get returns a TCP port on 127.0.0.1 that nothing listened on when it returned.
func Get(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
