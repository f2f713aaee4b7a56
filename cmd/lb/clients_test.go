package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"lb/admit"
	"lb/internal/freeport"
)

// Every bad client flag stops lb serve with exit status 2, naming the flag and what it
// allows, before lb listens.
func TestClientFlagsBadInput(t *testing.T) {
	servers := validServers(t)
	listen := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	base := []string{"serve", "-f", servers, "--listen", listen}
	cases := []struct{ flag, value, says string }{
		{"send-proxy", "v3", "v1, v2 or off"},
		{"accept-proxy", "10.0.0.0/33", `"10.0.0.0/33": want a CIDR`},
		{"accept-proxy", "10.0.0.0/8,lb-a.internal", `"lb-a.internal": want a CIDR`},
		{"per-ip-max-conns", "-1", "0 (no limit) or more"},
		{"per-ip-rate", "-0.5", "connections per second"},
		{"per-ip-rate", "NaN", "connections per second"},
		{"per-ip-rate", "many", "per-ip-rate"}, // urfave/cli's own parse error
		{"per-ip-burst", "-1", "0 (the rate rounded up) or more"},
		{"per-ip-burst", "5", "--per-ip-rate beside it"},
		{"per-ip-ipv6-prefix", "0", "a prefix length from 1 to 128"},
		{"per-ip-ipv6-prefix", "129", "a prefix length from 1 to 128"},
		{"queue-timeout", "0s", "a duration above 0"},
	}
	for _, tc := range cases {
		args := append(append([]string{}, base...), "--"+tc.flag, tc.value)
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			err := runRefused(t, listen, args...)
			if err == nil || exitCode(err) != exitBadInput {
				t.Fatalf("lb %q: err %v (exit %d), want exit %d", args, err, exitCode(err), exitBadInput)
			}
			if !strings.Contains(err.Error(), "-"+tc.flag) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("lb %q: %q does not name --%s and say %q", args, err, tc.flag, tc.says)
			}
		})
	}
}

func TestClientFlags(t *testing.T) {
	o, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if send, c := o.Source.Defaults.SendProxy, o.L4; send != "" || len(c.AcceptProxy) != 0 || admit.New(c.PerIP) != nil || c.QueueTimeout != time.Second {
		t.Errorf("defaults: send %q, %+v; want no header, no trusted peer, no limit, a 1s queue", send, c)
	}
	o, err = parse(t, "--send-proxy", "v2", "--accept-proxy", "10.0.0.0/8, 2001:db8::1", "--per-ip-max-conns", "20",
		"--per-ip-rate", "2.5", "--queue-timeout", "250ms")
	if err != nil {
		t.Fatal(err)
	}
	c := o.L4
	if o.Source.Defaults.SendProxy != "v2" || c.AcceptProxy.String() != "10.0.0.0/8,2001:db8::1/128" || c.QueueTimeout != 250*time.Millisecond ||
		c.PerIP != (admit.Config{MaxConns: 20, Rate: 2.5, Burst: 3, IPv6Prefix: 64}) {
		t.Errorf("flags: %+v (trusted %s)", c, c.AcceptProxy)
	}
	if !c.AcceptProxy.Contains(netip.MustParseAddr("10.9.8.7")) {
		t.Error("10.9.8.7 is not trusted under 10.0.0.0/8")
	}

	// Every one has its LB_* variable; --per-ip-rate is the one float among lb's flags.
	t.Setenv("LB_SEND_PROXY", "v1")
	t.Setenv("LB_PER_IP_RATE", "0.5")
	t.Setenv("LB_PER_IP_BURST", "4")
	t.Setenv("LB_ACCEPT_PROXY", "192.0.2.0/24")
	t.Setenv("LB_PER_IP_MAX_CONNS", "3")
	t.Setenv("LB_QUEUE_TIMEOUT", "2s")
	t.Setenv("LB_PER_IP_IPV6_PREFIX", "56")
	o, err = parse(t)
	if err != nil {
		t.Fatal(err)
	}
	c = o.L4
	if o.Source.Defaults.SendProxy != "v1" || c.AcceptProxy.String() != "192.0.2.0/24" || c.QueueTimeout != 2*time.Second ||
		c.PerIP != (admit.Config{MaxConns: 3, Rate: 0.5, Burst: 4, IPv6Prefix: 56}) {
		t.Errorf("from LB_* variables: %+v", c)
	}
}
