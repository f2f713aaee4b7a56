package sessions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a time source that tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2024, 5, 14, 9, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newMemory(limit int, ttl time.Duration) (*MemoryStore, *clock) {
	s := NewMemoryStore(limit, ttl)
	c := newClock()
	s.now = c.now
	return s, c
}

// mustGet fails the test unless Get answers without error; it returns what Get found.
func mustGet(t *testing.T, s Store, key string) (string, bool) {
	t.Helper()
	id, ok, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return id, ok
}

func mustSet(t *testing.T, s Store, key, id string) {
	t.Helper()
	if err := s.Set(context.Background(), key, id); err != nil {
		t.Fatalf("Set(%q, %q): %v", key, id, err)
	}
}

func wantID(t *testing.T, s Store, key, want string) {
	t.Helper()
	id, ok := mustGet(t, s, key)
	switch {
	case want == "" && ok:
		t.Fatalf("Get(%q) = %q; want a miss", key, id)
	case want != "" && (!ok || id != want):
		t.Fatalf("Get(%q) = %q, %t; want %q", key, id, ok, want)
	}
}

func TestMemoryGetSet(t *testing.T) {
	s, _ := newMemory(10, time.Minute)
	wantID(t, s, "k1", "")
	mustSet(t, s, "k1", "blue")
	mustSet(t, s, "k2", "green")
	wantID(t, s, "k1", "blue")
	wantID(t, s, "k2", "green")
	mustSet(t, s, "k1", "red")
	wantID(t, s, "k1", "red")
	if n := s.Len(); n != 2 {
		t.Errorf("Len = %d; want 2", n)
	}
}

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	s, _ := newMemory(3, time.Minute)
	for _, k := range []string{"a", "b", "c"} {
		mustSet(t, s, k, "id-"+k)
	}
	wantID(t, s, "a", "id-a") // a is now the most recently used: b is the least
	mustSet(t, s, "d", "id-d")
	wantID(t, s, "b", "")
	mustSet(t, s, "c", "id-c2") // a Set counts as a use too: a is the least now
	mustSet(t, s, "e", "id-e")
	wantID(t, s, "a", "")
	for k, want := range map[string]string{"c": "id-c2", "d": "id-d", "e": "id-e"} {
		wantID(t, s, k, want)
	}
	if n := s.Len(); n != 3 {
		t.Errorf("Len = %d; want 3", n)
	}
}

func TestMemoryTTL(t *testing.T) {
	s, c := newMemory(10, time.Minute)
	mustSet(t, s, "k", "blue")
	c.advance(time.Minute - time.Nanosecond)
	wantID(t, s, "k", "blue")
	c.advance(time.Minute) // unused for exactly the TTL since that Get
	wantID(t, s, "k", "")
	if n := s.Len(); n != 0 {
		t.Errorf("Len after the expired Get = %d; want 0: expired entries are dropped when met", n)
	}
}

func TestMemorySlidingTTL(t *testing.T) {
	s, c := newMemory(10, time.Minute)
	mustSet(t, s, "k", "blue")
	// In use every 40 s for 10 minutes: never expires.
	for range 15 {
		c.advance(40 * time.Second)
		wantID(t, s, "k", "blue")
	}
	c.advance(59 * time.Second)
	mustSet(t, s, "k", "green") // a Set restarts the TTL as well
	c.advance(59 * time.Second)
	wantID(t, s, "k", "green")
	c.advance(time.Minute)
	wantID(t, s, "k", "")
}

func TestMemoryDefaults(t *testing.T) {
	tests := []struct {
		limit     int
		ttl       time.Duration
		wantLimit int
		wantTTL   time.Duration
	}{
		{0, 0, DefaultMaxEntries, DefaultTTL},
		{-1, -1, DefaultMaxEntries, DefaultTTL},
		{1, 1, 1, 1}, // the smallest values in range are kept
		{7, time.Minute, 7, time.Minute},
	}
	for _, tt := range tests {
		s := NewMemoryStore(tt.limit, tt.ttl)
		if s.ttl != tt.wantTTL || s.lru.limit != tt.wantLimit {
			t.Errorf("NewMemoryStore(%d, %v): ttl %v, limit %d; want %v, %d", tt.limit, tt.ttl, s.ttl, s.lru.limit, tt.wantTTL, tt.wantLimit)
		}
	}
}

// TestLRUWithoutSlide checks the get that RedisStore's cache makes, with slide 0: a hit
// does not push the expiry, so a cached value is served no longer than it was put for.
func TestLRUWithoutSlide(t *testing.T) {
	var l lru
	l.init(10)
	t0 := newClock().now()
	l.put("k", "blue", t0.Add(time.Second))
	for _, tt := range []struct {
		at   time.Duration
		want string // "": a miss
	}{
		{0, "blue"},
		{500 * time.Millisecond, "blue"},
		{time.Second - time.Nanosecond, "blue"},
		{time.Second, ""},
	} {
		id, ok := l.get("k", t0.Add(tt.at), 0)
		if id != tt.want || ok != (tt.want != "") {
			t.Errorf("get at +%v = %q, %t; want %q", tt.at, id, ok, tt.want)
		}
	}
}

func TestMemoryClose(t *testing.T) {
	s, _ := newMemory(10, time.Minute)
	mustSet(t, s, "k", "blue")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(context.Background(), "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v; want ErrClosed", err)
	}
	if err := s.Set(context.Background(), "k", "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: %v; want ErrClosed", err)
	}
	if n := s.Len(); n != 0 {
		t.Errorf("Len after Close = %d; want 0", n)
	}
}

// TestMemoryConcurrent is for -race: readers and writers on overlapping keys of a store small
// enough to evict all the time, with the clock moving under them.
func TestMemoryConcurrent(t *testing.T) {
	const limit = 50
	s, c := newMemory(limit, time.Second)
	var wg sync.WaitGroup
	ctx := context.Background()
	for g := range 8 {
		// Not mustGet and mustSet: t.Fatalf must not be called off the test's goroutine.
		wg.Go(func() {
			for i := range 2000 {
				key := fmt.Sprintf("k%d", (g*7+i)%120)
				if i%3 == 0 {
					if err := s.Set(ctx, key, "id-"+key); err != nil {
						t.Errorf("Set(%q): %v", key, err)
						return
					}
					continue
				}
				if id, ok, err := s.Get(ctx, key); err != nil || ok && id != "id-"+key {
					t.Errorf("Get(%q) = %q, %t, %v; want id-%s or a miss", key, id, ok, err, key)
					return
				}
				if i%500 == 0 {
					c.advance(100 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	if n := s.Len(); n > limit {
		t.Errorf("Len = %d; want at most %d", n, limit)
	}
	// The list and the map agree: walk the list both ways.
	s.lru.mu.Lock()
	defer s.lru.mu.Unlock()
	n := 0
	for e := s.lru.root.next; e != &s.lru.root; e = e.next {
		if e.next.prev != e || s.lru.items[e.key] != e {
			t.Fatalf("list broken at %q", e.key)
		}
		n++
	}
	if n != len(s.lru.items) {
		t.Fatalf("list holds %d entries, map %d", n, len(s.lru.items))
	}
}

func BenchmarkMemoryGet(b *testing.B) {
	s := NewMemoryStore(100_000, time.Hour)
	ctx := context.Background()
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = NewKeyer(nil).Key([]byte(fmt.Sprint(i)))
		s.Set(ctx, keys[i], "backend")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Get(ctx, keys[i%len(keys)])
		i++
	}
}
