package sessions

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// RedisConfig configures a RedisStore. Fields out of range take the defaults shown.
type RedisConfig struct {
	URL       string        // redis://, redis+sentinel:// or redis+cluster:// (see NewRedisStore); required
	Cluster   string        // key namespace: replicas that share sessions share it; default "default"
	TTL       time.Duration // sliding expiry of a session; default DefaultTTL
	Timeout   time.Duration // bound on every call, dial included; default 50ms
	CacheSize int           // entries of the local cache of Get hits; 0 (default): no cache
	Resolver  *net.Resolver // looks up the hosts of URL (and those Sentinel or Cluster names); nil: net.DefaultResolver
}

// DefaultRedisTimeout is the bound on a call when RedisConfig.Timeout is not set: enough for
// a Redis on the same network, short enough that a connection does not wait on an outage.
const DefaultRedisTimeout = 50 * time.Millisecond

// cacheMaxAge bounds how long the local cache serves a value read from Redis.
const cacheMaxAge = time.Second

// RedisStore is a Store in Redis, shared by every lb replica configured with the same Redis
// and Cluster. A session with key k lives at "lb:<cluster>:s:<k>": Set writes it with SET
// ... EX ttl, Get reads it with GETEX ... EX ttl, which restarts the TTL in the same round
// trip (Redis 6.2 or later).
//
// Every call is bounded by Timeout, whatever Redis does: down, it fails at once; stopped or
// slow, it fails when Timeout runs out. Such a failure wraps ErrUnavailable. The store logs
// one warning "session store unreachable" when Redis stops answering and one info "session
// store back" when it answers again, never a line per call; an outage that starts within
// flapQuiet (10 s) of the last "back" is reported only if it lasts past that. It reconnects
// by itself. A Set that timed out may still be carried out: Redis may read it once it wakes.
//
// With CacheSize > 0, Get may answer from a local cache of values it read or wrote, each for
// at most a second, and then does not restart the TTL in Redis: a session in use is still
// refreshed at least once a second per replica. Set always writes through to Redis before it
// returns. So a session learned on one replica is seen on every replica at its next Get,
// unless that replica had the same key cached with an older id: that can only happen when a
// session moves to another backend, and lasts at most a second. Misses are never cached.
type RedisStore struct {
	rdb     redis.UniversalClient
	prefix  string // "lb:<cluster>:s:"
	ttl     time.Duration
	timeout time.Duration
	cache   *lru // nil without a cache
	reach   reachability
	closed  atomic.Bool
}

// NewRedisStore returns a store for cfg. It does not contact Redis: a Redis that is down
// at start-up is one more outage, reported on the first call (see Ping). An unusable URL is
// an error that quotes it, password redacted.
//
// cfg.URL names one server (redis://), a master found through Redis Sentinel
// (redis+sentinel://sentinel:port[,sentinel:port...]/master[/db]) or a Redis Cluster
// (redis+cluster://node:port[,node:port...]); rediss schemes use TLS. The user and password
// before the hosts are the data nodes', in every form; see parseRedisURL. Through Sentinel,
// the store follows the master when Sentinel fails over: calls fail, within Timeout, only
// until a Sentinel names the new master.
//
// go-redis logs through a global logger, which NewRedisStore silences: its lines would
// come once per failed dial, and the store reports outages itself.
func NewRedisStore(cfg RedisConfig, log zerolog.Logger) (*RedisStore, error) {
	if cfg.URL == "" {
		return nil, errors.New("no session store URL: want " + wantRedisURL)
	}
	target, err := parseRedisURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "default"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRedisTimeout
	}
	quietRedis.Do(func() { redis.SetLogger(discardLogger{}) })

	s := &RedisStore{
		rdb:     target.client(cfg.Timeout, cfg.Resolver),
		prefix:  "lb:" + cfg.Cluster + ":s:",
		ttl:     cfg.TTL,
		timeout: cfg.Timeout,
		reach:   reachability{log: log.With().Str("store", "redis").Str("addr", target.where).Logger(), now: time.Now},
	}
	if cfg.CacheSize > 0 {
		s.cache = &lru{}
		s.cache.init(cfg.CacheSize)
	}
	return s, nil
}

// Get returns the backend id for key and restarts its TTL, from the local cache if it has a
// fresh entry, else from Redis.
func (s *RedisStore) Get(ctx context.Context, key string) (string, bool, error) {
	if s.closed.Load() {
		return "", false, ErrClosed
	}
	if s.cache != nil {
		if id, ok := s.cache.get(key, time.Now(), 0); ok {
			return id, true, nil
		}
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	id, err := s.rdb.GetEx(cctx, s.prefix+key, s.ttl).Result()
	cancel()
	switch {
	case errors.Is(err, redis.Nil):
		s.reach.answered()
		return "", false, nil
	case err != nil:
		return "", false, s.failed(ctx, "get", err)
	}
	s.reach.answered()
	s.cacheID(key, id)
	return id, true, nil
}

// Set maps key to backendID in Redis with a fresh TTL, and in the local cache once Redis
// has it.
func (s *RedisStore) Set(ctx context.Context, key, backendID string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := s.rdb.Set(cctx, s.prefix+key, backendID, s.ttl).Err()
	cancel()
	if err != nil {
		return s.failed(ctx, "set", err)
	}
	s.reach.answered()
	s.cacheID(key, backendID)
	return nil
}

// Ping checks that Redis answers, within Timeout, and reports an outage or its end as any
// call does. Call it at start-up to log at once a Redis that is down.
func (s *RedisStore) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := s.rdb.Ping(cctx).Err()
	cancel()
	if err != nil {
		return s.failed(ctx, "ping", err)
	}
	s.reach.answered()
	return nil
}

// ClusterSecret returns the cluster's session secret, kept in Redis beside its sessions: the
// first replica to ask creates it (32 random bytes, hex-encoded), every later one reads the same, so
// replicas started without a secret of their own still derive the same keys. It retries
// until Redis answers or ctx is done.
func (s *RedisStore) ClusterSecret(ctx context.Context) ([]byte, error) {
	random := make([]byte, 32)
	rand.Read(random)
	fresh := []byte(hex.EncodeToString(random)) // text, for whoever looks at Redis
	retry := time.NewTicker(100 * time.Millisecond)
	defer retry.Stop()
	for {
		secret, _, err := s.shareSecret(ctx, fresh)
		if err == nil {
			return secret, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("session secret of the cluster: %w", err)
		case <-retry.C:
		}
	}
}

// shareSecret stores mine as the cluster's secret unless Redis holds one, and returns the one
// Redis holds now, and whether it is mine, just stored.
func (s *RedisStore) shareSecret(ctx context.Context, mine []byte) (secret []byte, stored bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// SET NX GET: the secret already there, or redis.Nil when ours was stored.
	old, err := s.rdb.SetArgs(cctx, s.secretKey(), mine, redis.SetArgs{Mode: "NX", Get: true}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return mine, true, nil
	case err != nil:
		return nil, false, err
	}
	return []byte(old), false, nil
}

func (s *RedisStore) secretKey() string { return strings.TrimSuffix(s.prefix, "s:") + "secret" }

// KeepClusterSecret checks every interval, until ctx is done or the store is closed, that
// Redis still holds secret as the cluster's. A Redis restarted without persistence has lost
// it, with every session: it gets this replica's back, so that replicas started later use it
// too. A Redis that holds another secret (a replica started after such a restart created
// one) wins, so the cluster agrees again: adopt is called with it.
func (s *RedisStore) KeepClusterSecret(ctx context.Context, secret []byte, interval time.Duration, adopt func([]byte)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s.closed.Load() {
			return
		}
		current, stored, err := s.shareSecret(ctx, secret)
		switch {
		case err != nil: // an outage: reported by the calls of the data path
		case stored:
			s.reach.log.Warn().Msg("the cluster's session secret was missing from Redis (restarted without persistence?): stored this replica's again")
		case !bytes.Equal(current, secret):
			s.reach.log.Warn().Msg("the cluster's session secret in Redis changed (restarted without persistence?): using it; sessions learned before are forgotten")
			secret = current
			adopt(current)
		}
	}
}

// Close closes the connections to Redis. Calls after it, or under way, return ErrClosed.
func (s *RedisStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.rdb.Close()
}

func (s *RedisStore) cacheID(key, id string) {
	if s.cache != nil {
		s.cache.put(key, id, time.Now().Add(min(cacheMaxAge, s.ttl)))
	}
}

// failed turns the error of a call into the one to return, and counts it against Redis
// unless the caller gave up (its ctx) or the store was closed.
func (s *RedisStore) failed(ctx context.Context, op string, err error) error {
	switch {
	case s.closed.Load():
		return ErrClosed
	case ctx.Err() != nil:
		return fmt.Errorf("session store %s: %w", op, ctx.Err())
	}
	s.reach.failed(err)
	return fmt.Errorf("%w: redis %s: %w", ErrUnavailable, op, err)
}

// flapQuiet is how long after a reported outage ended a new one waits to be reported: a
// Redis that answers one call in two must not log a pair of lines per call.
const flapQuiet = 10 * time.Second

// reachability follows whether the store answers, to log changes instead of calls. A call
// that succeeds while Redis is up costs one atomic load.
type reachability struct {
	log zerolog.Logger
	now func() time.Time

	down atomic.Bool // written under mu

	mu       sync.Mutex
	reported bool      // "unreachable" was logged for the current outage
	since    time.Time // start of the current outage
	failures int       // failed calls in the current outage
	lastBack time.Time // end of the last reported outage
}

// answered records a call that Redis answered.
func (r *reachability) answered() {
	if !r.down.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down.Load() {
		return
	}
	r.down.Store(false)
	if !r.reported {
		return // a blip too close to the last outage to have been reported
	}
	now := r.now()
	r.reported, r.lastBack = false, now
	r.log.Info().Dur("outage", now.Sub(r.since)).Int("failed_calls", r.failures).Msg("session store back")
}

// failed records a call that Redis did not answer, and reports the outage on its first
// failure, or on the first one past flapQuiet after the last reported outage ended.
func (r *reachability) failed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if !r.down.Load() {
		r.down.Store(true)
		r.since, r.failures = now, 0
	}
	r.failures++
	if !r.reported && now.Sub(r.lastBack) >= flapQuiet {
		r.reported = true
		r.log.Warn().Err(err).Msg("session store unreachable")
	}
}

// quietRedis silences go-redis's global logger once per process.
var quietRedis sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}
