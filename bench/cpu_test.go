package main

import (
	"math"
	"os"
	"testing"
)

func TestStatTicks(t *testing.T) {
	for _, c := range []struct {
		line string
		want int64
	}{
		// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
		{"42 (nginx) S 1 42 42 0 -1 4194624 10 0 0 0 250 130 0 0 20 0 1", 380},
		{"42 (a) b (c) R 1 42 42 0 -1 4194624 10 0 0 0 7 5 0 0 20 0 1", 12}, // a name with ") " in it
		{"42 (short) S 1 2 3", 0},
		{"garbage", 0},
	} {
		if got := statTicks([]byte(c.line)); got != c.want {
			t.Errorf("statTicks(%q) = %d, want %d", c.line, got, c.want)
		}
	}
	if procTicks(os.Getpid()) < 0 {
		t.Error("negative ticks for this process")
	}
}

func TestCostPerRequest(t *testing.T) {
	a := cpuSample{proxy: 1000, backends: 500, wrk: 200, idle: 9000, total: 20000}
	b := cpuSample{proxy: 1100, backends: 550, wrk: 240, idle: 9010, total: 20210}
	// 1,000 requests over the window: 100 ticks of 10 ms is 1 s, 1,000 µs per request.
	got := a.cost(b, 1000)
	want := cpuCost{proxy: 1000, backends: 500, wrk: 400, idle: 10.0 / 210} // 10 idle ticks of the machine's 210; other tasks ran 10
	for _, f := range [][2]float64{{got.proxy, want.proxy}, {got.backends, want.backends}, {got.wrk, want.wrk}, {got.idle, want.idle}} {
		if math.Abs(f[0]-f[1]) > 1e-9 {
			t.Fatalf("cost = %+v, want %+v", got, want)
		}
	}
}

func TestCPULineTicks(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	idle, total := cpuLineTicks([]byte("cpu  100 2 300 4000 50 0 600 7 90 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if idle != 4050 || total != 5059 {
		t.Errorf("idle, total = %d, %d; want 4050, 5059 (guest time is already in user)", idle, total)
	}
	if idle, total := cpuLineTicks([]byte("intr 1 2 3")); idle != 0 || total != 0 {
		t.Errorf("not a cpu line: %d, %d", idle, total)
	}
}
