package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"

	"lb/sessions"
)

// Sessions are the settings of the store of learned sessions, opened when a pool learns
// sessions (its SessionCookie).
type Sessions struct {
	Store      string // "memory" or a Redis URL: redis[s]://, redis[s]+sentinel://, redis[s]+cluster://
	TTL        time.Duration
	Secret     string // of the keyed hash sessions are stored under; "": generated, or the cluster's in Redis
	Timeout    time.Duration
	MaxEntries int    // of the memory store
	Cluster    string // the namespace replicas share in Redis
}

// Where names the store for logs and lb probe, without a password.
func (so Sessions) Where() string {
	if so.Store == "memory" || so.Store == "" {
		return "in memory"
	}
	return "in " + sessions.RedactURL(so.Store) + ", cluster " + so.Cluster
}

// Redis reports whether the store is Redis, which holds descriptors of its own.
func (so Sessions) Redis() bool { return so.Store != "memory" && so.Store != "" }

const (
	secretWait       = 5 * time.Second  // how long start-up waits for Redis to hand out the cluster's secret
	secretCheckEvery = 10 * time.Second // how often a replica checks that Redis still holds it
	redisConnsPerCPU = 10               // go-redis's pool: 10 connections a GOMAXPROCS
)

// sessionStore is an open store and the keyer of its keys.
type sessionStore struct {
	sessions.Store
	keyer *sessions.Keyer
	stop  func() // ends the watch of the cluster's secret
}

// openSessions opens the store of learned sessions. Without a secret, a memory store gets
// a random one and a Redis store the cluster's, which the first replica creates in Redis:
// if Redis cannot be reached for it, lb does not start, since replicas with different
// secrets would not find each other's sessions.
func openSessions(ctx context.Context, so Sessions, resolver *net.Resolver, log zerolog.Logger) (*sessionStore, error) {
	secret := []byte(so.Secret)
	if !so.Redis() {
		if len(secret) == 0 {
			secret = make([]byte, 32)
			rand.Read(secret)
		}
		return &sessionStore{sessions.NewMemoryStore(so.MaxEntries, so.TTL), sessions.NewKeyer(secret), func() {}}, nil
	}
	rs, err := sessions.NewRedisStore(sessions.RedisConfig{URL: so.Store, Cluster: so.Cluster, TTL: so.TTL, Timeout: so.Timeout, Resolver: resolver}, log)
	if err != nil {
		return nil, InputError{fmt.Errorf("--session-store: %w", err)}
	}
	if len(secret) > 0 {
		rs.Ping(ctx) // a Redis that is down is logged now, and lb starts: the ring decides meanwhile
		return &sessionStore{rs, sessions.NewKeyer(secret), func() {}}, nil
	}
	wait, cancel := context.WithTimeout(ctx, secretWait)
	secret, err = rs.ClusterSecret(wait)
	cancel()
	if err != nil {
		rs.Close()
		return nil, fmt.Errorf("%s: %w: start Redis, or give every replica the same --session-secret", so.Where(), err)
	}
	keyer := sessions.NewKeyer(secret)
	keepCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rs.KeepClusterSecret(keepCtx, secret, secretCheckEvery, keyer.SetSecret)
	}()
	return &sessionStore{rs, keyer, func() { stop(); <-done }}, nil
}

// close ends the store's work and closes it.
func (s *sessionStore) close() {
	s.stop()
	s.Close()
}

// PingSessions checks that a Redis session store answers within timeout, its host looked up
// through resolver (nil: the system's); nil for memory.
func PingSessions(ctx context.Context, so Sessions, timeout time.Duration, resolver *net.Resolver) error {
	if !so.Redis() {
		return nil
	}
	rs, err := sessions.NewRedisStore(sessions.RedisConfig{URL: so.Store, Cluster: so.Cluster, Timeout: timeout, Resolver: resolver}, zerolog.Nop())
	if err != nil {
		return err
	}
	defer rs.Close()
	return rs.Ping(ctx)
}
