package ring

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// backends returns n backends named A, B, C, ... at 10.0.0.1:80, 10.0.0.2:80, ...
func backends(n int) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{ID: string(rune('A' + i)), Addr: fmt.Sprintf("10.0.0.%d:80", i+1)}
	}
	return out
}

func mustNew(t testing.TB, bs ...Backend) *Ring {
	t.Helper()
	r, err := New(bs...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// picks returns the IDs of n calls to r.Next, "-" for none.
func picks(r *Ring, n int) string {
	var sb strings.Builder
	for range n {
		b, ok := r.Next()
		if !ok {
			sb.WriteString("-")
			continue
		}
		sb.WriteString(b.ID)
	}
	return sb.String()
}

// walk returns the IDs a fresh cursor yields until it stops.
func walk(r *Ring) string {
	var sb strings.Builder
	c := r.Cursor()
	for b, ok := c.Next(); ok; b, ok = c.Next() {
		sb.WriteString(b.ID)
	}
	return sb.String()
}

func count(s string) map[rune]int {
	m := map[rune]int{}
	for _, c := range s {
		m[c]++
	}
	return m
}

func TestEmpty(t *testing.T) {
	r := mustNew(t)
	if got := picks(r, 3); got != "---" {
		t.Errorf("picks = %q, want none", got)
	}
	if got := walk(r); got != "" {
		t.Errorf("cursor = %q, want nothing", got)
	}
	if r.Len() != 0 || len(r.Snapshot()) != 0 {
		t.Errorf("Len = %d, Snapshot = %v; want empty", r.Len(), r.Snapshot())
	}
	if _, _, ok := r.Lookup("A"); ok {
		t.Error("Lookup found a backend in an empty ring")
	}
	var zero Cursor
	if _, ok := zero.Next(); ok {
		t.Error("zero Cursor yielded a backend")
	}
}

func TestSingle(t *testing.T) {
	r := mustNew(t, backends(1)...)
	if got := picks(r, 4); got != "AAAA" {
		t.Errorf("picks = %q, want AAAA", got)
	}
	if got := walk(r); got != "A" {
		t.Errorf("cursor = %q, want A", got)
	}
	r.SetUp("A", false)
	if got := picks(r, 2); got != "--" {
		t.Errorf("picks with A down = %q, want none", got)
	}
}

func TestRotationOrder(t *testing.T) {
	r := mustNew(t, backends(3)...)
	if got := picks(r, 7); got != "ABCABCA" {
		t.Errorf("picks = %q, want ABCABCA", got)
	}
}

func TestRemoveNext(t *testing.T) {
	r := mustNew(t, backends(3)...)
	if got := picks(r, 1); got != "A" {
		t.Fatalf("first pick = %q, want A", got)
	}
	if !r.Remove("B") {
		t.Fatal("Remove(B) = false")
	}
	if r.Remove("B") {
		t.Error("second Remove(B) = true")
	}
	got := picks(r, 100)
	if c := count(got); c['A'] != 50 || c['C'] != 50 {
		t.Errorf("picks after removing B = %q, want A and C 50 each", got)
	}
	if got := walk(r); len(got) != 2 || strings.Contains(got, "B") {
		t.Errorf("cursor = %q, want A and C", got)
	}
	if r.Len() != 2 {
		t.Errorf("Len = %d, want 2", r.Len())
	}
}

func TestStateAcrossChanges(t *testing.T) {
	r := mustNew(t, backends(3)...)
	r.SetUp("B", false)
	r.SetUp("C", false)
	r.Remove("B")
	if err := r.Add(Backend{ID: "D", Addr: "10.0.0.4:80"}); err != nil {
		t.Fatal(err)
	}
	if _, up, ok := r.Lookup("C"); !ok || up {
		t.Errorf("C after others changed: up=%v ok=%v, want down", up, ok)
	}
	// A re-added backend is a new member and starts up, whatever it was before.
	if err := r.Add(Backend{ID: "B", Addr: "10.0.0.2:80"}); err != nil {
		t.Fatal(err)
	}
	if _, up, ok := r.Lookup("B"); !ok || !up {
		t.Errorf("re-added B: up=%v ok=%v, want up", up, ok)
	}
	want := []Status{
		{Backend: Backend{ID: "A", Addr: "10.0.0.1:80", Weight: 1}, Up: true, EffectiveWeight: 1},
		{Backend: Backend{ID: "C", Addr: "10.0.0.3:80", Weight: 1}, Up: false, EffectiveWeight: 1},
		{Backend: Backend{ID: "D", Addr: "10.0.0.4:80", Weight: 1}, Up: true, EffectiveWeight: 1},
		{Backend: Backend{ID: "B", Addr: "10.0.0.2:80", Weight: 1}, Up: true, EffectiveWeight: 1},
	}
	if got := r.Snapshot(); !slices.Equal(got, want) {
		t.Errorf("Snapshot = %v, want %v", got, want)
	}
}

func TestDuplicates(t *testing.T) {
	for _, bs := range [][]Backend{
		{{ID: "A", Addr: "x:1"}, {ID: "A", Addr: "x:2"}},
		{{ID: "A", Addr: "x:1"}, {ID: "B", Addr: "x:1"}},
	} {
		if _, err := New(bs...); !errors.Is(err, ErrDuplicate) {
			t.Errorf("New(%v) error = %v, want ErrDuplicate", bs, err)
		}
	}
	r := mustNew(t, backends(2)...)
	for _, b := range []Backend{{ID: "A", Addr: "x:1"}, {ID: "Z", Addr: "10.0.0.2:80"}} {
		if err := r.Add(b); !errors.Is(err, ErrDuplicate) {
			t.Errorf("Add(%v) error = %v, want ErrDuplicate", b, err)
		}
	}
	if r.Len() != 2 {
		t.Errorf("Len after rejected Adds = %d, want 2", r.Len())
	}
	if _, err := New(Backend{ID: "", Addr: "x:1"}); err == nil {
		t.Error("New accepted an empty ID")
	}
}

func TestSetUp(t *testing.T) {
	r := mustNew(t, backends(2)...)
	steps := []struct {
		id   string
		up   bool
		want bool
	}{
		{"A", true, false}, // already up
		{"A", false, true},
		{"A", false, false},
		{"A", true, true},
		{"nope", false, false},
	}
	for _, s := range steps {
		if got := r.SetUp(s.id, s.up); got != s.want {
			t.Errorf("SetUp(%q, %v) = %v, want %v", s.id, s.up, got, s.want)
		}
	}
}

func TestAllDown(t *testing.T) {
	r := mustNew(t, backends(3)...)
	for _, id := range []string{"A", "B", "C"} {
		r.SetUp(id, false)
	}
	if got := picks(r, 3); got != "---" {
		t.Errorf("picks = %q, want none", got)
	}
	if got := walk(r); got != "" {
		t.Errorf("cursor = %q, want nothing", got)
	}
}

// A down backend's share must go to all the others in proportion, not to its successor.
func TestDownSkippedFairly(t *testing.T) {
	r := mustNew(t, backends(4)...)
	r.SetUp("B", false)
	if got := picks(r, 9); got != "ACDACDACD" {
		t.Errorf("picks with B down = %q, want ACDACDACD", got)
	}
	r.SetUp("B", true)
	r.SetUp("C", false)
	r.SetUp("D", false)
	got := picks(r, 1000)
	if c := count(got); c['A'] != 500 || c['B'] != 500 {
		t.Errorf("with C and D down: counts %v, want A and B 500 each", c)
	}

	// A run of down slots longer than claimTries is still claimed whole, in one pick.
	r = mustNew(t, backends(7)...)
	for _, id := range []string{"B", "C", "D", "E", "F"} {
		r.SetUp(id, false)
	}
	if got := picks(r, 10); got != "AGAGAGAGAG" {
		t.Errorf("picks with B to F down = %q, want AGAGAGAGAG", got)
	}
}

func TestExactFairness(t *testing.T) {
	const n, k = 5, 1000
	r := mustNew(t, backends(n)...)
	for id, c := range count(picks(r, n*k)) {
		if c != k {
			t.Errorf("sequential: %c picked %d times, want %d", id, c, k)
		}
	}

	// Each counter value maps to one slot, so concurrency cannot skew the counts either.
	const goroutines = 10
	var wg sync.WaitGroup
	counts := make([]map[rune]int, goroutines)
	for g := range goroutines {
		wg.Go(func() { counts[g] = count(picks(r, n*k/goroutines)) })
	}
	wg.Wait()
	total := map[rune]int{}
	for _, c := range counts {
		for id, v := range c {
			total[id] += v
		}
	}
	for id, c := range total {
		if c != k {
			t.Errorf("concurrent: %c picked %d times, want %d", id, c, k)
		}
	}
}

func TestWeighted(t *testing.T) {
	tests := []struct {
		weights []int
		cycle   string // one cycle of the schedule
	}{
		{[]int{1, 1, 1}, "ABC"},
		{[]int{0, -3, 1}, "ABC"}, // < 1 counts as 1
		{[]int{3, 1}, "AABA"},
		{[]int{5, 1, 1}, "AABACAA"}, // nginx's documented example
		{[]int{4, 2}, "ABA"},        // reduced by the common divisor
		{[]int{2, 3}, "BABAB"},
	}
	for _, tt := range tests {
		bs := backends(len(tt.weights))
		for i, w := range tt.weights {
			bs[i].Weight = w
		}
		r := mustNew(t, bs...)
		const cycles = 100
		got := picks(r, cycles*len(tt.cycle))
		if want := strings.Repeat(tt.cycle, cycles); got != want {
			t.Errorf("weights %v: picks start %q, want cycle %q", tt.weights, got[:2*len(tt.cycle)], tt.cycle)
		}
		for id, c := range count(tt.cycle) {
			if got := count(got)[id]; got != cycles*c {
				t.Errorf("weights %v: %c picked %d times, want %d", tt.weights, id, got, cycles*c)
			}
		}
	}
}

func TestWeightedDown(t *testing.T) {
	bs := backends(3)
	bs[0].Weight, bs[1].Weight, bs[2].Weight = 6, 2, 1
	r := mustNew(t, bs...)
	r.SetUp("A", false)
	got := count(picks(r, 3000))
	if got['B'] != 2000 || got['C'] != 1000 || got['A'] != 0 {
		t.Errorf("weights 6,2,1 with A down: counts %v, want B 2000, C 1000", got)
	}
}

func TestCursor(t *testing.T) {
	r := mustNew(t, backends(5)...)
	twin := mustNew(t, backends(5)...)
	r.SetUp("D", false)
	twin.SetUp("D", false)
	picks(r, 1)
	picks(twin, 1)

	// The first pick is the one Next would make; the rest follow in ring order, skipping D.
	want, _ := twin.Next()
	c := r.Cursor()
	var got []string
	for b, ok := c.Next(); ok; b, ok = c.Next() {
		got = append(got, b.ID)
	}
	if got[0] != want.ID {
		t.Errorf("cursor's first = %s, want %s as Next would give", got[0], want.ID)
	}
	if s := strings.Join(got, ""); s != "BCEA" {
		t.Errorf("cursor = %q, want BCEA", s)
	}
	if _, ok := c.Next(); ok {
		t.Error("cursor yielded again after stopping")
	}
	// The cursor took one slot, like Next.
	if a, b := picks(r, 4), picks(twin, 4); a != b {
		t.Errorf("after the cursor: picks %q, twin %q", a, b)
	}
}

func TestCursorWeighted(t *testing.T) {
	bs := backends(3)
	bs[0].Weight = 10
	r := mustNew(t, bs...)
	for range 20 {
		if got := walk(r); len(got) != 3 || len(count(got)) != 3 {
			t.Fatalf("cursor = %q, want each of A, B, C once", got)
		}
	}
}

func TestCursorSnapshot(t *testing.T) {
	r := mustNew(t, backends(3)...)
	c := r.Cursor()
	r.Remove("B")
	r.Add(Backend{ID: "Z", Addr: "z:1"})
	var got string
	for b, ok := c.Next(); ok; b, ok = c.Next() {
		got += b.ID
	}
	if got != "ABC" {
		t.Errorf("cursor = %q, want the ring as it was when made: ABC", got)
	}
}

func TestNoAllocs(t *testing.T) {
	r := mustNew(t, backends(4)...)
	r.SetUp("B", false)
	for name, f := range map[string]func(){
		"Next":     func() { r.Next() },
		"Lookup":   func() { r.Lookup("C") },
		"SetUp":    func() { r.SetUp("C", true) },
		"SetState": func() { r.SetState("C", Up) },
		"Start/End": func() {
			c := r.Cursor()
			c.Next()
			a := c.Start()
			a.End()
		},
		"Cursor": func() {
			c := r.Cursor()
			for _, ok := c.Next(); ok; _, ok = c.Next() {
			}
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs, want 0", name, n)
		}
	}
}

// TestStress runs pickers against writers; meant for -race. Every pick must be a backend
// that was added, with its own address.
func TestStress(t *testing.T) {
	const pickers, writers, rounds = 8, 3, 2000
	all := backends(8)
	addrOf := map[string]string{}
	for _, b := range all {
		addrOf[b.ID] = b.Addr
	}
	r := mustNew(t, all[:4]...)
	var wg sync.WaitGroup
	errs := make(chan string, pickers)
	for p := range pickers {
		wg.Go(func() {
			for range rounds {
				if b, ok := r.Next(); ok && addrOf[b.ID] != b.Addr {
					errs <- fmt.Sprintf("Next gave %v", b)
					return
				}
				if p%2 == 0 {
					c := r.Cursor()
					seen := map[string]bool{}
					for b, ok := c.Next(); ok; b, ok = c.Next() {
						if seen[b.ID] || addrOf[b.ID] != b.Addr {
							errs <- fmt.Sprintf("cursor gave %v twice or wrong", b)
							return
						}
						seen[b.ID] = true
					}
				}
				r.Lookup("A")
				r.Snapshot()
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				b := all[(i*3+w)%len(all)]
				switch i % 3 {
				case 0:
					r.Add(b) // may be a duplicate: fine
				case 1:
					r.Remove(b.ID)
				case 2:
					r.SetUp(b.ID, i%2 == 0)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func BenchmarkNext(b *testing.B) {
	r := mustNew(b, backends(8)...)
	b.ReportAllocs()
	for b.Loop() {
		r.Next()
	}
}

func BenchmarkNextParallel(b *testing.B) {
	r := mustNew(b, backends(8)...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Next()
		}
	})
}

// BenchmarkCursor walks a whole cursor: the cost of a connection that tries every backend.
func BenchmarkCursor(b *testing.B) {
	r := mustNew(b, backends(8)...)
	r.SetUp("C", false)
	b.ReportAllocs()
	for b.Loop() {
		c := r.Cursor()
		for _, ok := c.Next(); ok; _, ok = c.Next() {
		}
	}
}

func TestAddDownIsNeverPickedUntilUp(t *testing.T) {
	r, err := New(Backend{ID: "a", Addr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddDown(Backend{ID: "b", Addr: "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if b, ok := r.Next(); !ok || b.ID != "a" {
			t.Fatalf("Next = %v, %v; want a: b was added down", b.ID, ok)
		}
	}
	if _, up, ok := r.Lookup("b"); !ok || up {
		t.Fatalf("Lookup(b): up %v, in ring %v; want down and in the ring", up, ok)
	}
	if !r.SetUp("b", true) {
		t.Fatal("SetUp(b, true) did not change b's state")
	}
	seen := map[string]int{}
	for range 10 {
		b, _ := r.Next()
		seen[b.ID]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("picks after b came up: %v, want 5 each", seen)
	}
	if err := r.AddDown(Backend{ID: "c", Addr: "127.0.0.1:2"}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("AddDown of a taken address: %v, want ErrDuplicate", err)
	}
}
