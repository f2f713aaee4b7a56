package sessions

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// keyByHand computes a key the plain way, as a reference for Keyer.
func keyByHand(secret, value []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(value)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

func TestKeyer(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	k := NewKeyer(secret)
	values := [][]byte{
		[]byte("9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
		[]byte(""),
		[]byte("a"),
		[]byte("s%3Aj0hn.d0e%40example.com.AbCdEf"),
		bytes.Repeat([]byte("long-session-value-"), 200),
	}
	seen := map[string]bool{}
	for _, v := range values {
		key := k.Key(v)
		if want := keyByHand(secret, v); key != want {
			t.Errorf("Key(%.20q) = %q; want %q", v, key, want)
		}
		if len(key) != KeyLen || strings.Trim(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			t.Errorf("Key(%.20q) = %q: want %d base64url characters", v, key, KeyLen)
		}
		if again := k.Key(v); again != key {
			t.Errorf("Key(%.20q) changed from %q to %q", v, key, again)
		}
		if other := NewKeyer(secret).Key(v); other != key {
			t.Errorf("another Keyer with the same secret: Key(%.20q) = %q; want %q", v, other, key)
		}
		if len(v) >= 4 && strings.Contains(key, string(v[:4])) {
			t.Errorf("Key(%.20q) = %q holds the start of the value", v, key)
		}
		if seen[key] {
			t.Errorf("Key(%.20q) = %q: same key as another value", v, key)
		}
		seen[key] = true
	}
}

func TestKeyerDependsOnSecret(t *testing.T) {
	v := []byte("9f8e7d6c5b4a39281706f5e4d3c2b1a0")
	keys := map[string]string{}
	for _, secret := range []string{"", "a", "b", "0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdeF"} {
		key := NewKeyer([]byte(secret)).Key(v)
		if other, dup := keys[key]; dup {
			t.Errorf("secrets %q and %q give the same key %q", other, secret, key)
		}
		keys[key] = secret
	}
}

func TestKeyerCopiesSecret(t *testing.T) {
	secret := []byte("secret")
	k := NewKeyer(secret)
	before := k.Key([]byte("v"))
	secret[0] = 'X'
	if after := k.Key([]byte("v")); after != before {
		t.Fatalf("changing the caller's secret changed the key from %q to %q", before, after)
	}
}

// SetSecret, while keys are being made (run with -race), gives the keys of the new secret.
func TestKeyerSetSecret(t *testing.T) {
	v := []byte("9f8e7d6c5b4a39281706f5e4d3c2b1a0")
	k := NewKeyer([]byte("old"))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				k.Key(v)
			}
		}
	}()
	k.SetSecret([]byte("new"))
	close(stop)
	wg.Wait()
	if got, want := k.Key(v), NewKeyer([]byte("new")).Key(v); got != want {
		t.Fatalf("after SetSecret: key %q, want the new secret's %q", got, want)
	}
}

func TestKeyerConcurrent(t *testing.T) {
	secret := []byte("secret")
	k := NewKeyer(secret)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				v := []byte(fmt.Sprintf("session-%d-%d", g, i))
				if got, want := k.Key(v), keyByHand(secret, v); got != want {
					t.Errorf("Key(%q) = %q; want %q", v, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkKeyer(b *testing.B) {
	k := NewKeyer([]byte("0123456789abcdef0123456789abcdef"))
	v := []byte("9f8e7d6c5b4a39281706f5e4d3c2b1a0")
	b.ReportAllocs()
	for b.Loop() {
		k.Key(v)
	}
}
