//go:build !race

// The race detector makes sync.Pool drop items at random, and so allocate.

package sessions

import "testing"

func TestKeyerAllocatesOnlyTheKey(t *testing.T) {
	k := NewKeyer([]byte("secret"))
	v := []byte("9f8e7d6c5b4a39281706f5e4d3c2b1a0")
	k.Key(v) // fill the pool
	if n := testing.AllocsPerRun(100, func() { k.Key(v) }); n > 1 {
		t.Errorf("Key: %v allocs per run; want 1", n)
	}
}
