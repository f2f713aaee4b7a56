package main

import (
	"math"
	"testing"
)

func TestBareCosts(t *testing.T) {
	keepalive, close, err := bareCosts(2, 20)
	if err != nil {
		t.Fatal(err)
	}
	// A read and a write each way cannot be free; a new connection costs more than a request.
	if keepalive <= 0 || close <= keepalive {
		t.Errorf("bare calls: keepalive %.2f µs, close %.2f µs", keepalive, close)
	}
}

func TestBudget(t *testing.T) {
	ref := cpuCost{proxy: 14.8, backends: 8.0, wrk: 8.1}
	// 2 CPUs for 1.10 × 61710 r/s: 29.46 µs per request, less 16.1 for wrk and the backends.
	if got := budget(2, 61710, ref, 0); math.Abs(got-13.36) > 0.01 {
		t.Errorf("budget with no idle = %.2f, want 13.36", got)
	}
	// With 4.3% of the CPUs idle, 95.7% of them are left: 28.19 - 16.1.
	if got := budget(2, 61710, ref, 0.043); math.Abs(got-12.09) > 0.01 {
		t.Errorf("budget with 4.3%% idle = %.2f, want 12.09", got)
	}
}
