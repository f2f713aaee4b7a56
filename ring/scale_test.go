package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// nginxSchedule is nginx's smooth weighted round-robin as nginx writes it, one score per
// member: the oracle for smoothSchedule's one score per weight.
func nginxSchedule(weights []int) []int32 {
	total := 0
	for _, w := range weights {
		total += w
	}
	current := make([]int, len(weights))
	var out []int32
	for range total {
		best := 0
		for i, w := range weights {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		out = append(out, int32(best))
	}
	return out
}

func TestScheduleMatchesNginx(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		weights := make([]int, 1+rng.IntN(12))
		for i := range weights {
			weights[i] = 1 + rng.IntN(1+rng.IntN(40)) // many repeated weights, some distinct
		}
		got := smoothSchedule(weights)
		if want := nginxSchedule(scaledWeights(weights)); !slices.Equal(got, want) {
			t.Fatalf("weights %v: schedule %v, nginx gives %v", weights, got, want)
		}
	}
}

func TestScaledWeights(t *testing.T) {
	for _, tt := range []struct {
		weights, want []int
	}{
		{[]int{4, 2, 6}, []int{2, 1, 3}},               // the common divisor goes
		{[]int{1, 1, 1}, []int{1, 1, 1}},               // already reduced
		{[]int{maxSlots, 1}, []int{maxSlots - 1, 1}},   // one slot too many: scaled, the small one kept at 1
		{[]int{913089, 2736939}, []int{87437, 262088}}, // scaled to 262311 and 786264, then divided by their 3
	} {
		if got := scaledWeights(tt.weights); !slices.Equal(got, tt.want) {
			t.Errorf("scaledWeights(%v) = %v, want %v", tt.weights, got, tt.want)
		}
	}
	// 4,000 backends weighted 1..1000 would need 2 million slots: scaled in proportion.
	weights := make([]int, 4000)
	for i := range weights {
		weights[i] = 1 + i%1000
	}
	got := scaledWeights(weights)
	sum := 0
	for _, w := range got {
		sum += w
	}
	if sum > maxSlots+len(weights) || got[999] < 400*got[1] {
		t.Errorf("scaled to %d slots, weight 1000 -> %d and 2 -> %d: want at most %d slots, proportions kept", sum, got[999], got[1], maxSlots+len(weights))
	}
}

// TestManyBackends builds a ring of 100,000 backends, as a large servers file gives, and
// checks that every one of them is picked once per cycle.
func TestManyBackends(t *testing.T) {
	bs := make([]Backend, 100_000)
	for i := range bs {
		bs[i] = Backend{ID: fmt.Sprintf("b%d", i), Addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16, i>>8&255, i&255)}
	}
	r := mustNew(t, bs...)
	seen := make(map[string]bool, len(bs))
	for range bs {
		b, _ := r.Next()
		seen[b.ID] = true
	}
	if len(seen) != len(bs) {
		t.Errorf("one cycle picked %d distinct backends, want %d", len(seen), len(bs))
	}
	if _, err := New(append(bs, Backend{ID: "x", Addr: bs[70_000].Addr})...); err == nil {
		t.Error("a duplicate address among 100,000 was not caught")
	}
}

func BenchmarkNew100k(b *testing.B) {
	bs := make([]Backend, 100_000)
	for i := range bs {
		bs[i] = Backend{ID: fmt.Sprintf("b%d", i), Addr: fmt.Sprintf("a%d:80", i), Weight: 1 + i%3}
	}
	for b.Loop() {
		if _, err := New(bs...); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNext100k(b *testing.B) {
	bs := make([]Backend, 100_000)
	for i := range bs {
		bs[i] = Backend{ID: fmt.Sprintf("b%d", i), Addr: fmt.Sprintf("a%d:80", i)}
	}
	r, _ := New(bs...)
	b.ReportAllocs()
	for b.Loop() {
		r.Next()
	}
}
