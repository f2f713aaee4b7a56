package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"lb/internal/freeport"
)

// The admin flags stop lb serve with exit status 2 naming --admin-listen or --admin-token,
// before it listens: a bad address, a non-loopback one without a token, one that is taken.
func TestAdminFlagsRefused(t *testing.T) {
	servers := validServers(t)
	listen := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--admin-listen", "127.0.0.1:90x"}, "--admin-listen 127.0.0.1:90x: want host:port"},
		{[]string{"--admin-listen", ":9090"}, "--admin-listen :9090: want a loopback address (127.0.0.1, [::1]) or unix:PATH, or set --admin-token"},
		{[]string{"--admin-listen", "0.0.0.0:0"}, "set --admin-token"},
		{[]string{"--admin-listen", "[::]:0"}, "set --admin-token"},
		{[]string{"--admin-listen", "admin.example:9090"}, "set --admin-token"},
		{[]string{"--admin-listen", "127.0.0.1:0", "--admin-token", "two words"}, "--admin-token: want one word"},
		{[]string{"--admin-listen", taken.Addr().String()}, "--admin-listen " + taken.Addr().String() + ": listen tcp"},
		{[]string{"--admin-listen", "unix:"}, "--admin-listen unix:: want host:port or unix:PATH"},
		{[]string{"--metrics-listen", "9100"}, "--metrics-listen 9100: want host:port or unix:PATH"},
		{[]string{"--admin-listen", "127.0.0.1:9555", "--metrics-listen", "127.0.0.1:9555"}, "give the metrics listener its own address"},
		{[]string{"--metrics-listen", taken.Addr().String()}, "--metrics-listen " + taken.Addr().String() + ": listen tcp"},
	}
	for _, tc := range cases {
		args := append([]string{"serve", "-f", servers, "--listen", listen}, tc.args...)
		err := runRefused(t, listen, args...)
		if err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("lb %q: %v (exit %d); want exit 2 with %q", tc.args, err, exitCode(err), tc.want)
		}
	}
	for _, ok := range [][]string{
		{"--admin-listen", "127.0.0.1:0"},
		{"--admin-listen", "[::1]:0"},
		{"--admin-listen", "localhost:0"},
		{"--admin-listen", "0.0.0.0:0", "--admin-token", "s3cret"},
		{"--admin-listen", "unix:/run/lb/admin.sock"},                  // no token: only lb's user can connect
		{"--admin-listen", "127.0.0.1:0", "--metrics-listen", ":9100"}, // metrics need no token anywhere
	} {
		o, err := parse(t, ok...)
		if err != nil || o.Admin.Listen != ok[1] {
			t.Errorf("lb serve %q: %v, admin listen %q; want it accepted", ok, err, o.Admin.Listen)
		}
	}
}

// lb drain and lb enable want one id, after the flags, and say so.
func TestDrainWantsOneID(t *testing.T) {
	for _, args := range [][]string{{"drain"}, {"enable", "a", "b"}, {"drain", "a", "--admin-listen", "127.0.0.1:1"}} {
		_, err := run(t, args...)
		if err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "one backend id, after the flags") {
			t.Errorf("lb %q: %v; want exit 2 saying where the id goes", args, err)
		}
	}
}
