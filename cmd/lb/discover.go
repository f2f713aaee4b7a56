package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/urfave/cli/v2"

	"lb/dnswatch"
)

var resolverFlag = &cli.StringFlag{Name: "resolver", Usage: "`HOST:PORT` of the DNS server to ask for backend names and discover= lines (e.g. Consul's 127.0.0.1:8600) instead of the system's"}

// resolverOf is the resolver that sends lb's lookups of backend names, discover= lines and
// the Redis host to the DNS server at addr; nil, the system's, for "".
func resolverOf(addr string) (*net.Resolver, error) {
	if addr == "" {
		return nil, nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return nil, badInput{fmt.Errorf("--resolver %s: want an IP address and port, e.g. 127.0.0.1:8600 or [::1]:53", addr)}
	}
	return dnswatch.Resolver(ap.String()), nil
}
