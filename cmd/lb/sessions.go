package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"lb/sessions"
)

// sessionOptions are the flags of learned sessions (--session-*, --cluster-name).
type sessionOptions struct {
	cookie     string // off when empty
	store      string // "memory" or a redis:// URL
	ttl        time.Duration
	secret     string
	timeout    time.Duration
	maxEntries int
	cluster    string
}

// where names the store for logs and lb probe, without a password.
func (so sessionOptions) where() string {
	if so.store == "memory" {
		return "in memory"
	}
	return "in " + sessions.RedactURL(so.store) + ", cluster " + so.cluster
}

const (
	secretWait       = 5 * time.Second  // how long start-up waits for Redis to hand out the cluster's secret
	secretCheckEvery = 10 * time.Second // how often a replica checks that Redis still holds it
)

// sessionStore is an open store and the keyer of its keys.
type sessionStore struct {
	sessions.Store
	keyer *sessions.Keyer
}

// openSessions opens the store of learned sessions; nil when --session-cookie is off.
// Without --session-secret, a memory store gets a random secret and a Redis store the
// cluster's, which the first replica creates in Redis: if Redis cannot be reached for it, lb
// does not start, since replicas with different secrets would not find each other's sessions.
func openSessions(ctx context.Context, so sessionOptions, log zerolog.Logger) (*sessionStore, error) {
	if so.cookie == "" {
		return nil, nil
	}
	secret := []byte(so.secret)
	if so.store == "memory" {
		if len(secret) == 0 {
			secret = make([]byte, 32)
			rand.Read(secret)
		}
		return &sessionStore{sessions.NewMemoryStore(so.maxEntries, so.ttl), sessions.NewKeyer(secret)}, nil
	}
	rs, err := sessions.NewRedisStore(sessions.RedisConfig{URL: so.store, Cluster: so.cluster, TTL: so.ttl, Timeout: so.timeout}, log)
	if err != nil {
		return nil, badInput{fmt.Errorf("--session-store: %w", err)}
	}
	if len(secret) > 0 {
		rs.Ping(ctx) // a Redis that is down is logged now, and lb starts: the ring decides meanwhile
		return &sessionStore{rs, sessions.NewKeyer(secret)}, nil
	}
	wait, cancel := context.WithTimeout(ctx, secretWait)
	secret, err = rs.ClusterSecret(wait)
	cancel()
	if err != nil {
		rs.Close()
		return nil, fmt.Errorf("%s: %w: start Redis, or give every replica the same --session-secret", so.where(), err)
	}
	keyer := sessions.NewKeyer(secret)
	go rs.KeepClusterSecret(ctx, secret, secretCheckEvery, keyer.SetSecret)
	return &sessionStore{rs, keyer}, nil
}

// pingSessionStore checks that a Redis session store answers; nil for memory or when off.
func pingSessionStore(ctx context.Context, so sessionOptions, timeout time.Duration) error {
	if so.cookie == "" || so.store == "memory" {
		return nil
	}
	rs, err := sessions.NewRedisStore(sessions.RedisConfig{URL: so.store, Cluster: so.cluster, Timeout: timeout}, zerolog.Nop())
	if err != nil {
		return err
	}
	defer rs.Close()
	return rs.Ping(ctx)
}
