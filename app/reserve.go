package app

import (
	"lb/admin"
	"lb/health"
)

// Descriptors lb holds besides its connections' sockets, counted so that l4 derives its
// connection limit from what is left of the open-files limit.
const (
	stdFDs     = 3 // stdin, stdout, stderr
	runtimeFDs = 2 // a DNS lookup's socket, the --watch's inotify (l4 counts the netpoller's)
	// An admin or metrics listener: its socket, admin.MaxConns connections, and the one it
	// is refusing.
	adminFDs = 1 + admin.MaxConns + 1
)

// reserved is how many descriptors lb may hold besides its connections: the standard ones
// and the runtime's, the listeners, each pool's probes (at most one per backend, and
// health.MaxProbes at once), the admin and metrics listeners, the access log file, and the Redis pool.
func reserved(pools []*pool, o Options, listeners int) int {
	n := stdFDs + runtimeFDs + listeners
	for _, p := range pools {
		n += min(health.MaxProbes, max(1, p.ring.Len()))
	}
	for _, addr := range []string{o.Admin.Listen, o.Admin.Metrics} {
		if addr != "" {
			n += adminFDs
		}
	}
	if o.AccessLog.Dest != "" && o.AccessLog.Dest != "off" && o.AccessLog.Dest != "stdout" && o.AccessLog.Dest != "stderr" {
		n += 2 // the file, and its new one while SIGUSR1 reopens it
	}
	if o.Sessions.Redis() {
		n += redisConnsPerCPU * max(1, o.Threads)
	}
	return n
}
