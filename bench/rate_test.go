package main

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestResponseSize(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n"
	whole := head + "backend-1\n"
	for _, c := range []struct {
		name, in string
		want     int
		err      error // nil, errPartial, or errBad for any other error
	}{
		{"whole", whole, len(whole), nil},
		{"one byte", "H", 0, errPartial},
		{"half a status line", "HTTP/1.1 2", 0, errPartial},
		{"head without its end", head[:len(head)-2], 0, errPartial},
		{"head without body", head, 0, errPartial},
		{"part of the body", whole[:len(whole)-1], 0, errPartial},
		{"more than one response", whole + "HTTP/1.1 200", len(whole), nil},
		{"lower-case header", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 40, nil},
		{"empty body", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38, nil},
		{"not 200, partial", "HTTP/1.1 50", 0, errBad},
		{"not 200", "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", 0, errBad},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n", 0, errBad},
		{"no length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, errBad},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", 0, errBad},
	} {
		got, err := responseSize([]byte(c.in))
		switch {
		case c.err == errBad && (err == nil || errors.Is(err, errPartial)):
			t.Errorf("%s: got %d, %v; want an error", c.name, got, err)
		case c.err != errBad && !errors.Is(err, c.err):
			t.Errorf("%s: error %v, want %v", c.name, err, c.err)
		case err == nil && got != c.want:
			t.Errorf("%s: size %d, want %d", c.name, got, c.want)
		}
	}
}

var errBad = errors.New("any error but errPartial")

// TestPercentile holds the histogram to the nearest-rank percentile of the sorted values:
// never below it, and above by less than a bucket's width (1/latencySub of the value).
func TestPercentile(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 99, 100, 101, 1000, 12345} {
		var h latencies
		values := make([]time.Duration, n)
		for i := range values {
			// Loopback latencies: mostly tens to hundreds of µs, a tail of ms; a few tiny ones.
			values[i] = time.Duration(rng.ExpFloat64() * 150e3)
			if i%50 == 0 {
				values[i] = time.Duration(rng.IntN(300))
			}
			h.add(values[i])
		}
		slices.Sort(values)
		var sum time.Duration
		for _, v := range values {
			sum += v
		}
		if h.mean() != sum/time.Duration(n) {
			t.Errorf("n=%d: mean %v, want %v", n, h.mean(), sum/time.Duration(n))
		}
		for _, p := range []float64{0.1, 1, 50, 90, 99, 99.9, 100} {
			want := values[max(1, int(math.Ceil(float64(n)*p/100)))-1]
			got := h.percentile(p)
			if got < want || got-want > want/latencySub {
				t.Errorf("n=%d: p%v = %v, sorted values say %v", n, p, got, want)
			}
		}
	}
}

func TestLatencyBuckets(t *testing.T) {
	// Every value lies in its bucket, whose top is below the next bucket's values.
	for _, v := range []time.Duration{0, 1, 127, 128, 255, 256, 257, 511, 512, 1e3, 1e6, 1e9, 1<<36 - 1} {
		i := latencyBucket(v)
		if top := latencyTop(i); v > top || (i > 0 && v <= latencyTop(i-1)) {
			t.Errorf("%d ns: bucket %d, whose top is %d and the one below's %d", v, i, top, latencyTop(i-1))
		}
	}
	if i := latencyBucket(time.Hour); i != latencyBuckets-1 {
		t.Errorf("an hour: bucket %d, want the last, %d", i, latencyBuckets-1)
	}
}
