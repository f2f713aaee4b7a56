package metrics

import (
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLint holds every lb_* metric to Prometheus' naming conventions (the linter promtool
// check metrics runs): names, units, _total on counters, help texts.
func TestLint(t *testing.T) {
	m := New(Options{OpenFDs: func() (int, error) { return 3, nil }})
	m.SetSource(knownSource())
	m.ProbeObserver("web")("web-1", time.Millisecond)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "lb_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// TestScrapeBoundedAtTwentyThousandBackends: two pools of 10,000 backends each, every one
// with traffic; a scrape stays under 4 MB and 1 s, and three scrapes leave the heap less
// than 50 MB bigger.
func TestScrapeBoundedAtTwentyThousandBackends(t *testing.T) {
	const perPool = 10_000
	src := &fixedSource{}
	for p := range 2 {
		for i := range perPool {
			src.rows = append(src.rows, Backend{Pool: fmt.Sprintf("pool-%d", p), ID: fmt.Sprintf("%08x", p*perPool+i), Up: i%3 != 0, LastChange: time.Unix(1700000000, 0)})
		}
	}
	for l := range src.perLoop {
		src.perLoop[l] = make([]BackendCounters, len(src.rows))
		for r := range src.rows {
			src.perLoop[l][r] = BackendCounters{Connections: 100, Active: 1, BytesReceived: 1 << 20, BytesSent: 4096, DialErrors: 1, HTTP: [NumMethods]uint64{MethodGet: 90, MethodPost: 10}}
		}
	}
	m := New(Options{Version: "scale"})
	m.SetSource(src)
	for p := range 2 {
		m.ProbeObserver(fmt.Sprintf("pool-%d", p))("", time.Millisecond)
	}
	h := m.Handler()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 3 {
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		took := time.Since(start)
		body := rec.Body.String()
		series := strings.Count(body, "\n") - strings.Count(body, "\n#")
		t.Logf("scrape %d: %d bytes, %d series, %v", i+1, len(body), series, took)
		if len(body) >= 4<<20 {
			t.Errorf("scrape of %d backends: %d bytes, want under 4 MB", 2*perPool, len(body))
		}
		if took >= time.Second && !raceEnabled {
			t.Errorf("scrape of %d backends took %v, want under 1s", 2*perPool, took)
		}
		for _, want := range []string{
			`lb_backend_up{backend="00004e1f",pool="pool-1"} 0`, // the last backend (down): every one has its up state
			`lb_pool_connections_total{pool="pool-1"} 2e+06`,    // sums over all 10,000
			`lb_pool_backends{pool="pool-0",state="down"} 3334`,
			`lb_backend_connections_total{backend="000003e7",pool="pool-0"} 200`, // the 1,000th of its pool
		} {
			if !strings.Contains(body, want+"\n") {
				t.Errorf("scrape %d lacks %s", i+1, want)
			}
		}
		if strings.Contains(body, `lb_backend_connections_total{backend="000003e8",pool="pool-0"}`) {
			t.Error("the 1,001st backend of a pool has its own traffic series")
		}
	}
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 50<<20 {
		t.Errorf("the heap grew %d MB over three scrapes, want under 50", grew>>20)
	}
}
