package main

import (
	"fmt"
	"math"
	"time"

	"github.com/urfave/cli/v2"

	"lb/admit"
	"lb/proxyhdr"
)

// The flags on clients: where their address comes from (PROXY protocol) and how many
// connections each may open.
var (
	sendProxyFlag     = &cli.StringFlag{Name: "send-proxy", Usage: "send each backend a PROXY protocol header with the client's address: v1 (text) or v2 (binary); default: none"}
	acceptProxyFlag   = &cli.StringFlag{Name: "accept-proxy", Usage: "`CIDRS` of trusted balancers in front of lb (e.g. 10.0.0.0/8,192.0.2.7): their connections must start with a PROXY v1 or v2 header, whose client lb uses; others' bytes are never parsed as one"}
	perIPMaxConnsFlag = &cli.IntFlag{Name: "per-ip-max-conns", Usage: "connections one client address may hold open at once; over it an HTTP client gets 429 (0: no limit)"}
	perIPRateFlag     = &cli.Float64Flag{Name: "per-ip-rate", Usage: "new connections per second one client address may open, on average; over it an HTTP client gets 429 with Retry-After (0: no limit)"}
	perIPBurstFlag    = &cli.IntFlag{Name: "per-ip-burst", Usage: "new connections one client address may open at once before --per-ip-rate paces it (0: the rate rounded up, at least 1)"}
	perIPv6PrefixFlag = &cli.IntFlag{Name: "per-ip-ipv6-prefix", Value: admit.DefaultIPv6Prefix, Usage: "the per-ip limits count an IPv6 client by the first `N` bits of its address (1 to 128): a client rotating addresses in its /64 is one client; IPv4 is counted by the whole address"}
	queueTimeoutFlag  = &cli.DurationFlag{Name: "queue-timeout", Value: time.Second, Usage: "when every backend is at its maxconn, how long a connection waits for a slot before it gets 503"}
)

// clientOptions are the values of the client flags, for l4.
type clientOptions struct {
	sendProxy    proxyhdr.Version // header sent to every backend; proxyhdr.None: off
	acceptProxy  proxyhdr.Trusted // peers whose PROXY header lb reads; empty: none
	admit        admit.Config     // per-address limits; admit.New returns nil when off
	queueTimeout time.Duration
}

func parseClientOptions(c *cli.Context) (clientOptions, error) {
	var o clientOptions
	var err error
	if o.sendProxy, err = proxyhdr.ParseVersion(c.String("send-proxy")); err != nil {
		return o, badInput{fmt.Errorf("--send-proxy %q: want v1 or v2 (or nothing: no header)", c.String("send-proxy"))}
	}
	if o.acceptProxy, err = proxyhdr.ParseTrusted(c.String("accept-proxy")); err != nil {
		return o, badInput{fmt.Errorf("--accept-proxy: %w", err)}
	}
	o.admit = admit.Config{
		MaxConns: c.Int("per-ip-max-conns"),
		Rate:     c.Float64("per-ip-rate"),
		Burst:    c.Int("per-ip-burst"),
		// The IPv6 prefix, 1..128, checked below.
		IPv6Prefix: c.Int("per-ip-ipv6-prefix"),
	}
	o.queueTimeout = c.Duration("queue-timeout")
	r := o.admit.Rate
	checks := []struct {
		bad  bool
		flag string
		want string
	}{
		{o.admit.MaxConns < 0, "per-ip-max-conns", "0 (no limit) or more"},
		{r < 0 || math.IsNaN(r) || math.IsInf(r, 0), "per-ip-rate", "connections per second, 0 (no limit) or more, e.g. 10 or 0.5"},
		{o.admit.Burst < 0, "per-ip-burst", "0 (the rate rounded up) or more"},
		{o.admit.Burst > 0 && r == 0, "per-ip-burst", "--per-ip-rate beside it: the burst is the token bucket's size"},
		{o.admit.IPv6Prefix < 1 || o.admit.IPv6Prefix > 128, "per-ip-ipv6-prefix", "a prefix length from 1 to 128, e.g. 64"},
		{o.queueTimeout <= 0, "queue-timeout", "a duration above 0, e.g. 1s"},
	}
	for _, ch := range checks {
		if ch.bad {
			return o, badInput{fmt.Errorf("--%s %v: want %s", ch.flag, c.Value(ch.flag), ch.want)}
		}
	}
	if r > 0 && o.admit.Burst == 0 {
		o.admit.Burst = int(min(math.Ceil(r), 1<<30))
	}
	return o, nil
}
