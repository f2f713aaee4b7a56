package main

import (
	"math"
	"os"
	"testing"
)

func TestBareCosts(t *testing.T) {
	fds := openFDs(t)
	// Enough calls that a busy machine's preemptions, which land on both alike, do not
	// reorder them: with 2 rounds and 20 connections, a 2-core machine at load 13 measured a
	// request dearer than a connection.
	perRequest, perConn, err := bareCosts(10, 200)
	if err != nil {
		t.Fatal(err)
	}
	// A read and a write each way cannot be free; a new connection costs more than a request.
	if perRequest <= 0 || perConn <= perRequest {
		t.Errorf("bare calls: %.2f µs per request, %.2f µs per connection", perRequest, perConn)
	}
	if after := openFDs(t); after != fds {
		t.Errorf("%d descriptors open after the bare calls, %d before", after, fds)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

func TestBudget(t *testing.T) {
	ref := cpuCost{proxy: 14.8, backends: 8.0, wrk: 8.1}
	// 2 CPUs for 1.10 × 61710 r/s: 29.46 µs per request, less 16.1 for wrk and the backends.
	if got := budget(2, 61710, ref, 0); math.Abs(got-13.3633) > 0.001 {
		t.Errorf("budget with no idle = %.4f, want 13.3633", got)
	}
	// With 4.3% of the CPUs idle, 95.7% of them are left: 28.1964 - 16.1.
	if got := budget(2, 61710, ref, 0.043); math.Abs(got-12.0964) > 0.001 {
		t.Errorf("budget with 4.3%% idle = %.4f, want 12.0964", got)
	}
}
