// Package sessions remembers which backend holds a client's session, so that lb can send
// every connection of that session to the same backend: a Store maps session keys to backend
// ids, in memory (MemoryStore) or shared by every lb replica of a cluster through Redis
// (RedisStore).
//
// Keys are never raw session values: a Keyer hashes each value with the cluster's secret
// first, so a store, its memory or its Redis holds nothing that would let anyone log in as a
// client. Entries expire after a TTL that every Get restarts (sliding expiry): a session
// stays where it is for as long as it is in use.
//
// A store is a hint, never a gate: a miss or an error means "pick a backend as usual", and
// the caller should not wait for the store longer than a connection can afford; RedisStore
// bounds every call by its Timeout for that reason.
package sessions

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"sync"
	"sync/atomic"
)

// Store maps session keys to backend ids. Implementations are safe for concurrent use.
type Store interface {
	// Get returns the backend id for key and refreshes its TTL (sliding expiry). A key that
	// is unknown or expired is a miss: ok false and a nil error.
	Get(ctx context.Context, key string) (backendID string, ok bool, err error)
	// Set maps key to backendID, replacing any earlier id, with a fresh TTL.
	Set(ctx context.Context, key, backendID string) error
	// Close releases the store's resources; later calls return ErrClosed.
	Close() error
}

var (
	_ Store = (*MemoryStore)(nil)
	_ Store = (*RedisStore)(nil)
)

// Errors of a Store, to be tested with errors.Is.
var (
	// ErrClosed is returned by calls on a store after its Close.
	ErrClosed = errors.New("sessions: store is closed")
	// ErrUnavailable wraps the error of a call the store could not answer in time (Redis
	// down, slow or refusing): route the connection as if the session were unknown.
	ErrUnavailable = errors.New("sessions: store unavailable")
)

// KeyLen is the length of every key a Keyer returns.
const KeyLen = 22

// Keyer turns raw session values (cookie values) into store keys: the HMAC-SHA256 of the
// value under the cluster's secret, cut to 128 bits and base64url-encoded without padding,
// KeyLen characters. Without the secret, a key cannot be linked to a value, nor a value
// guessed from a key. Every lb replica of a cluster must use the same secret, or they will
// not find each other's sessions. A Keyer is safe for concurrent use.
type Keyer struct {
	cur atomic.Pointer[keyerSecret]
}

// keyerSecret is one secret and its pool of MACs: a secret swapped in gets a pool of its own.
type keyerSecret struct {
	macs sync.Pool // of *keyState: an HMAC costs a few allocations to set up
}

type keyState struct {
	mac hash.Hash
	sum []byte // room for the MAC, reused
	out [KeyLen]byte
}

// NewKeyer returns a Keyer for secret, which it copies. The secret should be at least 32
// random bytes; an empty one still hides raw values but lets anyone who has a candidate
// value check it against a key.
func NewKeyer(secret []byte) *Keyer {
	k := &Keyer{}
	k.SetSecret(secret)
	return k
}

// SetSecret makes later keys use secret, which it copies: when the cluster's secret changed.
func (k *Keyer) SetSecret(secret []byte) {
	secret = bytes.Clone(secret)
	ks := &keyerSecret{}
	ks.macs.New = func() any {
		return &keyState{mac: hmac.New(sha256.New, secret), sum: make([]byte, 0, sha256.Size)}
	}
	k.cur.Store(ks)
}

// Key returns the store key of the session value. The same value gives the same key for
// the same secret, on any replica. It allocates one string: the key.
func (k *Keyer) Key(value []byte) string {
	ks := k.cur.Load()
	st := ks.macs.Get().(*keyState)
	st.mac.Reset()
	st.mac.Write(value)
	st.sum = st.mac.Sum(st.sum[:0])
	base64.RawURLEncoding.Encode(st.out[:], st.sum[:16])
	key := string(st.out[:])
	ks.macs.Put(st)
	return key
}
