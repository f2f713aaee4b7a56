package app

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"lb/admin"
	"lb/config"
	"lb/sessions"
)

// Check reports the first setting of o out of its range, nil when all are allowed. Keys
// are the settings' names as lb.yaml writes them ("sniff_timeout", "health.rise"); lb
// serve's flags are the same words with dashes.
func (o Options) Check() *config.Invalid {
	if bad := o.Source.Defaults.Check(); bad != nil {
		return bad
	}
	l, s, ip, ad := o.L4, o.Sessions, o.L4.PerIP, o.Admin
	return config.First(
		config.Bad(l.SniffTimeout <= 0, "sniff_timeout", "a duration above 0, e.g. 3s"),
		config.Bad(l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20, "max_header_bytes", "1024 to 1048576"),
		config.Bad(l.ResolveEvery < time.Second, "resolve_every", "a duration of 1s or more, e.g. 30s"),
		config.Bad(l.MaxConns < 0, "max_conns", "0 (derived from the open-files limit) or more"),
		config.Bad(l.MaxHeadMemory < 0 || l.MaxHeadMemory > 1<<40, "max_sniff_memory", "0 (derived) or a size in MiB, e.g. 64"),
		config.Bad(l.QueueTimeout <= 0, "queue_timeout", "a duration above 0, e.g. 1s"),
		config.Bad(ip.MaxConns < 0, "per_ip_max_conns", "0 (no limit) or more"),
		config.Bad(ip.Rate < 0 || math.IsNaN(ip.Rate) || math.IsInf(ip.Rate, 0), "per_ip_rate", "connections per second, 0 (no limit) or more, e.g. 10 or 0.5"),
		config.Bad(ip.Burst < 0, "per_ip_burst", "0 (the rate rounded up) or more"),
		config.Bad(ip.Burst > 0 && ip.Rate == 0, "per_ip_burst", "--per-ip-rate beside it: the burst is the token bucket's size"),
		config.Bad(ip.IPv6Prefix < 1 || ip.IPv6Prefix > 128, "per_ip_ipv6_prefix", "a prefix length from 1 to 128, e.g. 64"),
		config.Bad(o.DrainTimeout < 0, "drain_timeout", "a duration of 0 or more, e.g. 10s"),
		config.Bad(o.SlowStart < 0, "slow_start", "0 (off) or a duration, e.g. 30s"),
		config.Bad(o.Engine != "" && !slices.Contains(config.Engines, o.Engine), "engine", config.WantEngine),
		config.Bad(o.Threads < 1 || o.Threads > runtime.NumCPU(), "threads", fmt.Sprintf("1 to %d, the CPUs lb may use", runtime.NumCPU())),
		config.Bad(s.Store != "memory" && !sessions.IsRedisURL(s.Store), "session_store", "memory, redis://host:port/db, redis+sentinel://host:port[,host:port...]/master[/db] or redis+cluster://host:port[,host:port...]"),
		config.Bad(s.TTL <= 0, "session_ttl", "a duration above 0, e.g. 30m"),
		config.Bad(s.Timeout <= 0, "session_timeout", "a duration above 0, e.g. 50ms"),
		config.Bad(s.MaxEntries < 1, "session_max_entries", "1 or more"),
		config.Bad(s.Cluster == "" || strings.ContainsAny(s.Cluster, " :\r\n"), "cluster_name", "a name without spaces or colons, e.g. shop-eu"),
		config.Bad(ad.Metrics != "" && !validAdminAddr(ad.Metrics), "metrics_listen", "host:port or unix:PATH, e.g. :9100 or 127.0.0.1:9100"),
		config.Bad(ad.Listen != "" && !validAdminAddr(ad.Listen), "admin_listen", "host:port or unix:PATH, e.g. 127.0.0.1:9090, [::1]:9090 or unix:/run/lb/admin.sock"),
		config.Bad(ad.Listen != "" && ad.Listen == ad.Metrics, "metrics_listen", "not --admin-listen's address: give the metrics listener its own address"),
		config.Bad(strings.ContainsAny(ad.Token, " \t\r\n"), "admin_token", "one word without spaces, e.g. from: openssl rand -hex 16"),
		config.Bad(ad.Listen != "" && ad.Token == "" && !admin.Private(ad.Listen), "admin_listen",
			"a loopback address (127.0.0.1, [::1]) or unix:PATH, or set --admin-token (LB_ADMIN_TOKEN) beside it"),
	)
}

// validAdminAddr reports whether addr is one the admin listeners take: host:port, as a
// listener's (config.ValidListen), or unix:PATH.
func validAdminAddr(addr string) bool {
	if path, ok := admin.IsUnix(addr); ok {
		return path != ""
	}
	return config.ValidListen(addr)
}
