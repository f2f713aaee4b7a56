package main

import (
	"fmt"
	"math"
	"time"

	"github.com/urfave/cli/v2"

	"lb/admit"
	"lb/app"
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

// parseClientOptions reads the client flags into o: the PROXY header sent to every pool
// that sets none, the peers whose PROXY header lb reads, the per-address limits and the
// queue's timeout.
func parseClientOptions(c *cli.Context, o *app.Options) (err error) {
	o.Source.Defaults.SendProxy = sendProxy(c)
	if o.L4.AcceptProxy, err = proxyhdr.ParseTrusted(c.String("accept-proxy")); err != nil {
		return badInput{fmt.Errorf("--accept-proxy: %w", err)}
	}
	perIP := admit.Config{
		MaxConns:   c.Int("per-ip-max-conns"),
		Rate:       c.Float64("per-ip-rate"),
		Burst:      c.Int("per-ip-burst"),
		IPv6Prefix: c.Int("per-ip-ipv6-prefix"),
	}
	o.L4.QueueTimeout = c.Duration("queue-timeout")
	if r := perIP.Rate; r > 0 && perIP.Burst == 0 {
		perIP.Burst = int(min(math.Ceil(r), 1<<30)) // NaN and Inf are refused by Options.Check
	}
	o.L4.PerIP = perIP
	return nil
}

// sendProxy is --send-proxy as a pool's send_proxy: "" for none (config checks it).
func sendProxy(c *cli.Context) string {
	if v := c.String("send-proxy"); v != "off" {
		return v
	}
	return ""
}
