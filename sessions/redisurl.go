package sessions

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The forms of a Redis session store URL, as errors quote them.
const (
	wantRedisURL    = "redis://[user:password@]host:port/db, e.g. redis://10.0.0.5:6379/0"
	wantSentinelURL = "redis+sentinel://[user:password@]host:port[,host:port...]/master[/db], e.g. redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster/0"
	wantClusterURL  = "redis+cluster://[user:password@]host:port[,host:port...], e.g. redis+cluster://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379"
)

// IsRedisURL reports whether raw has the scheme of a Redis session store: redis://,
// rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://.
// It does not check the rest; NewRedisStore does.
func IsRedisURL(raw string) bool {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return false
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
		return true
	}
	return false
}

// redisTarget is what a store URL names: one of its options is set.
type redisTarget struct {
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
	where    string // for logs: the address, or the sentinels and master, or the seed nodes
}

// parseRedisURL reads a store URL in one of three forms:
//
//	redis[s]://[user:password@]host:port/db                     one server (redis.ParseURL)
//	redis[s]+sentinel://[user:password@]host:port[,host:port...]/master[/db][?sentinel_username=u&sentinel_password=p]
//	redis[s]+cluster://[user:password@]host:port[,host:port...]
//
// In the Sentinel form, the hosts are the Sentinels, master is the name they monitor, db
// is 0 unless given; user and password are the data nodes' (the master and its replicas),
// as most clients that share this form read them; the Sentinels' own, when they require
// one, go in the query. In the Cluster form, the hosts are seed nodes (one is enough, the
// client learns the others) and user and password are the nodes'. rediss: TLS to every
// node, Sentinels included. Errors say which form was meant and show it, but never raw.
func parseRedisURL(raw string) (redisTarget, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	tlsOn := strings.HasPrefix(strings.ToLower(scheme), "rediss")
	switch strings.ToLower(scheme) {
	case "redis+sentinel", "rediss+sentinel":
		opt, err := parseSentinel(rest, tlsOn)
		if err != nil {
			return redisTarget{}, fmt.Errorf("session store URL %q: %w; want %s", RedactURL(raw), err, wantSentinelURL)
		}
		return redisTarget{failover: opt, where: "sentinel " + strings.Join(opt.SentinelAddrs, ",") + " master " + opt.MasterName}, nil
	case "redis+cluster", "rediss+cluster":
		opt, err := parseCluster(rest, tlsOn)
		if err != nil {
			return redisTarget{}, fmt.Errorf("session store URL %q: %w; want %s", RedactURL(raw), err, wantClusterURL)
		}
		return redisTarget{cluster: opt, where: "cluster " + strings.Join(opt.Addrs, ",")}, nil
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its message quotes the URL, password included
		}
		return redisTarget{}, fmt.Errorf("session store URL %q: %w; want %s, or redis+sentinel:// or redis+cluster://", RedactURL(raw), err, wantRedisURL)
	}
	return redisTarget{single: opt, where: opt.Addr}, nil
}

// multiHost is the parts of host:port[,host:port...] URLs that url.Parse does not take (it
// refuses a list of hosts with IPv6 addresses in it).
type multiHost struct {
	user, password string
	addrs          []string
	path           []string // segments after the hosts, unescaped
	query          url.Values
}

func splitMultiHost(rest string) (multiHost, error) {
	var m multiHost
	rest, rawQuery, _ := strings.Cut(rest, "?")
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		user, password, _ := strings.Cut(rest[:at], ":")
		var err error
		if m.user, err = url.PathUnescape(user); err != nil {
			return m, fmt.Errorf("user: %w", err)
		}
		if m.password, err = url.PathUnescape(password); err != nil {
			return m, errors.New("password: bad %-escape") // the error would quote it
		}
		rest = rest[at+1:]
	}
	hosts, path, _ := strings.Cut(rest, "/")
	if hosts == "" {
		return m, errors.New("no host:port")
	}
	for h := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return m, fmt.Errorf("%q is not host:port", h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return m, fmt.Errorf("port of %q is not 1 to 65535", h)
		}
		m.addrs = append(m.addrs, net.JoinHostPort(host, port))
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" {
			continue
		}
		s, err := url.PathUnescape(seg)
		if err != nil {
			return m, fmt.Errorf("path %q: %w", seg, err)
		}
		m.path = append(m.path, s)
	}
	var err error
	if m.query, err = url.ParseQuery(rawQuery); err != nil {
		return m, errors.New("query: bad %-escape")
	}
	return m, nil
}

func parseSentinel(rest string, tlsOn bool) (*redis.FailoverOptions, error) {
	m, err := splitMultiHost(rest)
	if err != nil {
		return nil, err
	}
	opt := &redis.FailoverOptions{SentinelAddrs: m.addrs, Username: m.user, Password: m.password}
	switch len(m.path) {
	case 0:
		return nil, errors.New("no master name after the Sentinels")
	case 2:
		db, err := strconv.Atoi(m.path[1])
		if err != nil || db < 0 {
			return nil, fmt.Errorf("database %q is not a number of 0 or more", m.path[1])
		}
		opt.DB = db
	case 1:
	default:
		return nil, errors.New("more than /master/db after the Sentinels")
	}
	opt.MasterName = m.path[0]
	for k, v := range m.query {
		switch k {
		case "sentinel_username":
			opt.SentinelUsername = v[len(v)-1]
		case "sentinel_password":
			opt.SentinelPassword = v[len(v)-1]
		default:
			return nil, fmt.Errorf("unknown parameter %q: only sentinel_username and sentinel_password", k)
		}
	}
	if tlsOn {
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12} // server name: the host dialled
	}
	return opt, nil
}

func parseCluster(rest string, tlsOn bool) (*redis.ClusterOptions, error) {
	m, err := splitMultiHost(rest)
	if err != nil {
		return nil, err
	}
	if len(m.path) > 0 {
		return nil, fmt.Errorf("path /%s: a Redis Cluster has only database 0", strings.Join(m.path, "/"))
	}
	if len(m.query) > 0 {
		return nil, errors.New("no parameters are taken")
	}
	opt := &redis.ClusterOptions{Addrs: m.addrs, Username: m.user, Password: m.password}
	if tlsOn {
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return opt, nil
}

// client returns the client for t, every call bounded by timeout, host names looked up
// through resolver (nil: the system's).
//
// One attempt per call, each step bounded by timeout, so a call never outlives it: the
// dial, the wait for a pooled connection, the command. After PoolSize dials failed in a
// row, go-redis fails calls at once and probes Redis in the background every second.
// Through Sentinel, a dial first asks a Sentinel where the master is, within the same
// bound. A Cluster client still follows MOVED and ASK redirects (a slot that moved), up
// to three, within the same bound; it also tries a node that did not answer again, then
// another one, backing off between tries, so a call for the slots of a dead node fails
// when its bound runs out (about 100 ms with a 300 ms bound, measured), not at once.
func (t redisTarget) client(timeout time.Duration, resolver *net.Resolver) redis.UniversalClient {
	noMaint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	switch {
	case t.failover != nil:
		o := t.failover
		o.Dialer = dialer(timeout, resolver, o.TLSConfig) // the Sentinels' and the data nodes'
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.ContextTimeoutEnabled = true
		o.MaxRetries = -1
		o.DialerRetries = 1
		o.DisableIdentity = true // no extra round trips when connecting
		return redis.NewFailoverClient(o)
	case t.cluster != nil:
		o := t.cluster
		o.Dialer = dialer(timeout, resolver, o.TLSConfig)
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.ContextTimeoutEnabled = true
		o.MaxRetries = -1
		o.DialerRetries = 1
		o.DisableIdentity = true
		o.MaintNotificationsConfig = noMaint
		return redis.NewClusterClient(o)
	}
	o := t.single
	o.Dialer = dialer(timeout, resolver, o.TLSConfig)
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.DisableIdentity = true
	o.MaintNotificationsConfig = noMaint
	return redis.NewClient(o)
}

// dialer is go-redis's own dialer but for the resolver; nil (go-redis's) without one.
func dialer(timeout time.Duration, resolver *net.Resolver, tlsConfig *tls.Config) func(context.Context, string, string) (net.Conn, error) {
	if resolver == nil {
		return nil
	}
	d := &net.Dialer{Timeout: timeout, Resolver: resolver}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if tlsConfig == nil {
			return d.DialContext(ctx, network, addr)
		}
		return (&tls.Dialer{NetDialer: d, Config: tlsConfig}).DialContext(ctx, network, addr)
	}
}

// sentinelPassword matches the value of the sentinel_password parameter.
var sentinelPassword = regexp.MustCompile(`(?i)([?&]sentinel_password=)[^&#]*`)

// RedactURL hides the passwords of a Redis URL, even one that does not parse, for logs:
// the one before the host and a sentinel_password parameter.
func RedactURL(raw string) string {
	return sentinelPassword.ReplaceAllString(redactUserinfo(raw), "${1}xxxxx")
}

func redactUserinfo(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return raw
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}
