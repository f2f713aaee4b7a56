package sessions

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the constructors' arguments that are out of range.
const (
	DefaultMaxEntries = 100_000
	DefaultTTL        = time.Hour
)

// MemoryStore is a Store in the memory of one process: sessions are not shared with other
// replicas and do not survive a restart. It holds at most maxEntries sessions, evicting the
// least recently used (Get or Set) when full; an entry not used for ttl is a miss. Its calls
// never block on I/O and do not consult ctx.
type MemoryStore struct {
	ttl    time.Duration
	now    func() time.Time // time.Now; tests move it by hand
	closed atomic.Bool
	lru    lru
}

// NewMemoryStore returns an empty store. maxEntries below 1 takes DefaultMaxEntries, a ttl
// of 0 or less DefaultTTL.
func NewMemoryStore(maxEntries int, ttl time.Duration) *MemoryStore {
	if maxEntries < 1 {
		maxEntries = DefaultMaxEntries
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	s := &MemoryStore{ttl: ttl, now: time.Now}
	s.lru.init(maxEntries)
	return s
}

// Get returns the backend id for key and restarts its TTL.
func (s *MemoryStore) Get(_ context.Context, key string) (string, bool, error) {
	if s.closed.Load() {
		return "", false, ErrClosed
	}
	id, ok := s.lru.get(key, s.now(), s.ttl)
	return id, ok, nil
}

// Set maps key to backendID with a fresh TTL.
func (s *MemoryStore) Set(_ context.Context, key, backendID string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.lru.put(key, backendID, s.now().Add(s.ttl))
	return nil
}

// Len returns the number of entries held, expired ones not yet dropped included.
func (s *MemoryStore) Len() int {
	return s.lru.len()
}

// Close drops every entry; later calls return ErrClosed.
func (s *MemoryStore) Close() error {
	s.closed.Store(true)
	s.lru.init(1)
	return nil
}

// lru is a map bounded to max entries that drops the least recently used one to make room,
// and treats entries past their expiry as absent. MemoryStore and RedisStore's local cache
// share it.
type lru struct {
	mu    sync.Mutex
	limit int
	items map[string]*lruEntry
	root  lruEntry // sentinel of a circular list: root.next is the most recently used
}

type lruEntry struct {
	key, value string
	expires    time.Time
	prev, next *lruEntry
}

func (l *lru) init(limit int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit = limit
	l.items = make(map[string]*lruEntry)
	l.root.prev, l.root.next = &l.root, &l.root
}

// get returns the value of key if it has not expired at now, and marks it used. A slide
// above 0 pushes its expiry to now+slide.
func (l *lru) get(key string, now time.Time, slide time.Duration) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.items[key]
	if !ok {
		return "", false
	}
	if !now.Before(e.expires) {
		l.remove(e)
		return "", false
	}
	if slide > 0 {
		e.expires = now.Add(slide)
	}
	l.toFront(e)
	return e.value, true
}

// put sets key to value until expires, marks it used, and evicts the least recently used
// entry when that makes one too many.
func (l *lru) put(key, value string, expires time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[key]; ok {
		e.value, e.expires = value, expires
		l.toFront(e)
		return
	}
	e := &lruEntry{key: key, value: value, expires: expires}
	l.items[key] = e
	l.toFront(e)
	if len(l.items) > l.limit {
		l.remove(l.root.prev)
	}
}

func (l *lru) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items)
}

// toFront moves e, linked or not, to the front of the list.
func (l *lru) toFront(e *lruEntry) {
	if e.next != nil {
		e.prev.next, e.next.prev = e.next, e.prev
	}
	e.prev, e.next = &l.root, l.root.next
	l.root.next.prev = e
	l.root.next = e
}

func (l *lru) remove(e *lruEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(l.items, e.key)
}
