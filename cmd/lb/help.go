package main

// flagCategories group the flags in `lb serve --help` (urfave/cli sorts the groups by name)
// and in docs/configuration.md (in this order). A flag that sets its own Category keeps it;
// every other flag takes its group from here, and a test fails for a serve flag in none.
var flagCategories = []struct {
	name  string
	flags []string
}{
	{"Listeners and backends", []string{"config", "servers", "listen", "port", "watch", "pid-file", "resolver", "resolve-every", "threads", "engine"}},
	{"Health checks", []string{"health-interval", "health-timeout", "rise", "fall", "health-http", "health-expect-status"}},
	{"Balancing and stickiness", []string{"balance", "slow-start", "sticky-cookie", "sticky-cookie-attrs"}},
	{"Sessions", []string{"session-cookie", "session-store", "session-ttl", "session-secret", "session-timeout", "session-max-entries", "cluster-name"}},
	{"Clients and limits", []string{"send-proxy", "accept-proxy", "per-ip-max-conns", "per-ip-rate", "per-ip-burst", "per-ip-ipv6-prefix", "queue-timeout", "max-conns", "max-sniff-memory"}},
	{"Timeouts and sizes", []string{"sniff-timeout", "sniff-timeout-action", "max-header-bytes", "connect-timeout", "idle-timeout", "drain-timeout"}},
	{"Logging", []string{"log-level", "log-format", "access-log", "access-log-format"}},
	{"Admin", []string{"admin-listen", "admin-token", "metrics-listen"}},
}

// categoryOf is the help group of the flag called name: own if it set one, else its group in
// flagCategories, or "".
func categoryOf(name, own string) string {
	if own != "" {
		return own
	}
	for _, c := range flagCategories {
		for _, f := range c.flags {
			if f == name {
				return c.name
			}
		}
	}
	return ""
}
