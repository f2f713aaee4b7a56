package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/urfave/cli/v2"

	"lb/discover"
)

var resolverFlag = &cli.StringFlag{Name: "resolver", Usage: "`HOST:PORT` of the DNS server to ask for backend names and discover= lines (e.g. Consul's 127.0.0.1:8600) instead of the system's"}

// useResolver sends every DNS query of lb (backend names, discover= lines, the session
// store's host) to the server at addr; empty leaves the system's. It replaces
// net.DefaultResolver, which every lookup of the process goes through, l4's included.
func useResolver(addr string) error {
	if addr == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return badInput{fmt.Errorf("--resolver %s: want an IP address and port, e.g. 127.0.0.1:8600 or [::1]:53", addr)}
	}
	net.DefaultResolver = discover.Resolver(ap.String())
	return nil
}
