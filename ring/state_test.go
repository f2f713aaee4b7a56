package ring

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestSetState(t *testing.T) {
	r := mustNew(t, backends(3)...)
	if !r.SetState("B", Draining) || r.SetState("B", Draining) {
		t.Error("SetState(B, Draining) should change once")
	}
	if r.SetState("nope", Down) {
		t.Error("SetState of an unknown id reported a change")
	}
	if got := count(picks(r, 100)); got['B'] != 0 || got['A'] != 50 || got['C'] != 50 {
		t.Errorf("picks with B draining = %v, want A and C 50 each", got)
	}
	if got := walk(r); len(got) != 2 || count(got)['B'] != 0 {
		t.Errorf("cursor with B draining = %q, want A and C", got)
	}
	// Draining keeps sticky clients (Lookup says up); Down does not.
	if _, up, ok := r.Lookup("B"); !ok || !up {
		t.Errorf("Lookup(B) draining: up=%v ok=%v, want up for sticky clients", up, ok)
	}
	r.SetState("B", Down)
	if _, up, _ := r.Lookup("B"); up {
		t.Error("Lookup(B) in state Down: up, want not")
	}
	// Health and state are apart: a sick backend set Up again stays out until healthy.
	r.SetUp("B", false)
	r.SetState("B", Up)
	if got := count(picks(r, 10)); got['B'] != 0 {
		t.Errorf("sick B set Up was picked: %v", got)
	}
	r.SetUp("B", true)
	if got := count(picks(r, 30)); got['B'] != 10 {
		t.Errorf("healthy B set Up: picks %v, want B 10 of 30", got)
	}
	snap := r.Snapshot()
	if snap[1].State != Up || !snap[1].Up {
		t.Errorf("Snapshot B = %+v, want healthy and Up", snap[1])
	}
	r.SetState("C", Draining)
	r.SetUp("C", false)
	if s := r.Snapshot()[2]; s.State != Draining || s.Up {
		t.Errorf("Snapshot C = %+v, want sick and draining", s)
	}
	if Draining.String() != "draining" || Down.String() != "down" || Up.String() != "up" {
		t.Error("State.String")
	}
}

func TestSetWeight(t *testing.T) {
	r := mustNew(t, backends(2)...)
	r.SetState("B", Draining)
	if !r.SetWeight("A", 3) || r.SetWeight("nope", 2) {
		t.Fatal("SetWeight: want true for A, false for an unknown id")
	}
	r.SetState("B", Up)
	if got := count(picks(r, 400)); got['A'] != 300 || got['B'] != 100 {
		t.Errorf("A weight 3, B 1: picks %v, want 300/100", got)
	}
	r.SetWeight("B", 0)
	s := r.Snapshot()
	if s[0].Weight != 3 || s[0].EffectiveWeight != 3 || s[1].Weight != 1 {
		t.Errorf("Snapshot = %+v, want A weight 3, B 1 (0 counts as 1)", s)
	}
	// State survives a weight change: it lives on the member, not the snapshot.
	if s[1].State != Up {
		t.Errorf("B state after SetWeight = %v, want up", s[1].State)
	}
	if b, _, _ := r.Lookup("A"); b.Weight != 3 {
		t.Errorf("Lookup(A).Weight = %d, want 3", b.Weight)
	}
}

func TestActiveCounts(t *testing.T) {
	r := mustNew(t, backends(3)...)
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	held := make([][]Active, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				c := r.Cursor()
				c.Next()
				a := c.Start()
				b := r.Start("C")
				b.End()
				b.End() // a second End does nothing
				held[g] = append(held[g], a)
			}
		})
	}
	wg.Wait()
	var total int64
	for _, s := range r.Snapshot() {
		total += s.Active
	}
	if total != goroutines*each {
		t.Fatalf("active total %d, want %d", total, goroutines*each)
	}
	r.Remove("A") // ending a removed backend's connections is fine
	for g := range held {
		for i := range held[g] {
			held[g][i].End()
		}
	}
	for _, s := range r.Snapshot() {
		if s.Active != 0 {
			t.Errorf("%s: %d active after every End, want 0", s.ID, s.Active)
		}
	}
	var zero Active
	zero.End()
	var c Cursor
	if a := c.Start(); a != (Active{}) {
		t.Error("Start on a cursor with no pick counted something")
	}
	if a := r.Start("nope"); a != (Active{}) {
		t.Error("Start of an unknown id counted something")
	}
}

// TestStressWriters runs picks of every balance against every kind of writer; for -race.
func TestStressWriters(t *testing.T) {
	const rounds = 1000
	all := backends(6)
	for i := range balanceNames {
		r := mustNewWith(t, Config{Balance: Balance(i), SlowStart: time.Second}, all[:3]...)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range rounds {
					c := r.CursorFor(netip.MustParseAddr("192.0.2.1"))
					for b, ok := c.Next(); ok; b, ok = c.Next() {
						if b.ID == "" || b.Weight < 1 {
							t.Errorf("picked %+v", b)
							return
						}
						a := c.Start()
						a.End()
					}
					r.Snapshot()
				}
			})
		}
		wg.Go(func() {
			for j := range rounds {
				b := all[j%len(all)]
				switch j % 6 {
				case 0:
					r.Add(b)
				case 1:
					r.Remove(b.ID)
				case 2:
					r.SetUp(b.ID, j%4 == 0)
				case 3:
					r.SetState(b.ID, State(j%3))
				case 4:
					r.SetWeight(b.ID, j%7)
				case 5:
					r.Ramp(time.Now())
				}
			}
		})
		wg.Wait()
	}
}

func TestMaxConn(t *testing.T) {
	for i := range balanceNames {
		bs := backends(2)
		bs[0].MaxConn = 2
		r := mustNewWith(t, Config{Balance: Balance(i)}, bs...)
		var held []Active
		for range 2 {
			held = append(held, r.Start("A"))
		}
		if got := count(picks(r, 50)); got['A'] != 0 || got['B'] != 50 {
			t.Errorf("%s: A at its maxconn was picked: %v", Balance(i), got)
		}
		r.SetUp("B", false)
		c := r.CursorFor(netip.MustParseAddr("192.0.2.1"))
		if b, ok := c.Next(); ok {
			t.Errorf("%s: A full and B down, but the cursor gave %s", Balance(i), b.ID)
		}
		if !c.Full() {
			t.Errorf("%s: Full() = false with A at its limit", Balance(i))
		}
		held[0].End()
		if b, ok := r.Next(); !ok || b.ID != "A" {
			t.Errorf("%s: A below its limit again: Next = %v, %v; want A", Balance(i), b, ok)
		}
		r.SetMaxConn("A", 0)
		if s := r.Snapshot()[0]; s.MaxConn != 0 {
			t.Errorf("after SetMaxConn(A, 0): MaxConn %d", s.MaxConn)
		}
		for range 5 {
			held = append(held, r.Start("A"))
		}
		if _, ok := r.Next(); !ok {
			t.Errorf("%s: A without a limit was not picked", Balance(i))
		}
		r.SetUp("A", false)
		c = r.Cursor()
		if _, ok := c.Next(); ok || c.Full() {
			t.Errorf("%s: all down: Full() = true, want false (waiting will not help)", Balance(i))
		}
		if r.SetMaxConn("nope", 1) {
			t.Error("SetMaxConn of an unknown id reported true")
		}
	}
}
