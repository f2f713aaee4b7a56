package app

import "lb/health"

// Descriptors lb holds besides its connections' sockets, counted so that l4 derives its
// connection limit from what is left of the open-files limit.
const (
	stdFDs     = 3 // stdin, stdout, stderr
	runtimeFDs = 2 // a DNS lookup's socket, the --watch's inotify (l4 counts the netpoller's)
	adminConns = 1 // the admin listener (its connections are capped by http.Server's limits)
)

// reserved is how many descriptors lb may hold besides its connections: the standard ones
// and the runtime's, the listeners, each pool's probes (at most one per backend, and
// health.MaxProbes at once), the admin listener, the access log file, and the Redis pool.
func reserved(pools []*pool, o Options, listeners int) int {
	n := stdFDs + runtimeFDs + listeners
	for _, p := range pools {
		n += min(health.MaxProbes, max(1, p.ring.Len()))
	}
	if o.Admin.Listen != "" {
		n += adminConns
	}
	if o.AccessLog.Dest != "" && o.AccessLog.Dest != "off" && o.AccessLog.Dest != "stdout" && o.AccessLog.Dest != "stderr" {
		n += 2 // the file, and its new one while SIGUSR1 reopens it
	}
	if o.Sessions.Redis() {
		n += redisConnsPerCPU * max(1, o.Threads)
	}
	return n
}
