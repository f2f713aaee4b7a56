package metrics

import (
	"context"
	"errors"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"lb/internal/metricstest"
)

// fixedSource reports a fixed Snapshot, as two loops would: each adds its half.
type fixedSource struct {
	loops   [2]Counters
	rows    []Backend
	perLoop [2][]BackendCounters // by row index
	calls   int
}

func (f *fixedSource) Collect(s *Snapshot) {
	f.calls++
	for i := range f.loops {
		c := f.loops[i] // a loop counts accepted, active and refused per listener
		lc := ListenerCounters{Accepted: c.Accepted, Active: c.Active, Refused: c.Refused}
		c.Accepted, c.Active, c.Refused = 0, 0, [NumRefuseReasons]uint64{}
		s.Counters.Add(&c)
		s.AddListener(testListener, &lc)
	}
	for r, row := range f.rows {
		b := s.AddBackend(row.Pool, row.ID)
		b.Up, b.LastChange = row.Up, row.LastChange
		for l := range f.perLoop {
			b.BackendCounters.Add(&f.perLoop[l][r])
		}
	}
}

const testListener = "127.0.0.1:7777"

func knownSource() *fixedSource {
	f := &fixedSource{
		rows: []Backend{
			{Pool: "web", ID: "web-1", Up: true, LastChange: time.Unix(1700000000, 500_000_000)},
			{Pool: "web", ID: "b4eb8c70", Up: false},
		},
	}
	for l := range f.loops {
		c := &f.loops[l]
		c.Accepted = 15
		c.Active = 2
		c.Durations.Observe(3 * time.Millisecond) // le 0.005
		c.Durations.Observe(2 * time.Second)      // le 5
		c.Durations.Observe(2 * time.Hour)        // +Inf only
		c.Sniff[SniffHTTP1] = 10
		c.Sniff[SniffTLS] = 2
		c.Sniff[SniffTimeout] = 1
		c.Sticky[StickyHit] = 4
		c.Sticky[StickyDown] = 1
		c.StoreCalls, c.StoreErrors = 7, 1
		c.Refused[RefuseNoneUp] = 3
		c.Refused[RefuseDialFailed] = 1
		c.Answers[Answer503] = 3
		c.Answers[Answer502] = 1
		f.perLoop[l] = []BackendCounters{
			{Connections: 5, Active: 1, BytesReceived: 1000, BytesSent: 200, Retries: 1, HTTP: [NumMethods]uint64{MethodGet: 4, MethodPost: 1}},
			{DialErrors: 2},
		}
	}
	return f
}

func scrape(t *testing.T, m *Metrics) metricstest.Values {
	t.Helper()
	srv := httptest.NewServer(m.Handler()) // a real listener on 127.0.0.1:0
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := metricstest.Scrape(ctx, srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestScrapeReportsTheSnapshotExactly(t *testing.T) {
	m := New(Options{Version: "v1.2.3", OpenFDs: func() (int, error) { return 42, nil }})
	src := knownSource()
	m.SetSource(src)
	probe := m.ProbeObserver("web")
	probe("web-1", 3*time.Millisecond)
	probe("web-1", 700*time.Millisecond)
	v := scrape(t, m)
	K := metricstest.Key
	want := map[string]float64{
		K("lb_build_info", "version", "v1.2.3", "revision", "unknown", "goversion", runtime.Version()): 1,
		K("lb_open_fds"): 42,
		K("lb_accepted_connections_total", "listener", testListener): 30,
		K("lb_active_connections", "listener", testListener):         4,

		K("lb_connection_duration_seconds_count"):                 6,
		K("lb_connection_duration_seconds_sum"):                   2 * (0.003 + 2 + 7200),
		K("lb_connection_duration_seconds_bucket", "le", "0.001"): 0,
		K("lb_connection_duration_seconds_bucket", "le", "0.005"): 2,
		K("lb_connection_duration_seconds_bucket", "le", "1"):     2,
		K("lb_connection_duration_seconds_bucket", "le", "5"):     4,
		K("lb_connection_duration_seconds_bucket", "le", "3600"):  4,
		K("lb_connection_duration_seconds_bucket", "le", "+Inf"):  6,

		K("lb_sniff_total", "kind", "http1"):     20,
		K("lb_sniff_total", "kind", "h2"):        0,
		K("lb_sniff_total", "kind", "tls"):       4,
		K("lb_sniff_total", "kind", "other"):     0,
		K("lb_sniff_total", "kind", "timeout"):   2,
		K("lb_sniff_total", "kind", "oversized"): 0,

		K("lb_sticky_decisions_total", "result", "hit"):     8,
		K("lb_sticky_decisions_total", "result", "miss"):    0,
		K("lb_sticky_decisions_total", "result", "invalid"): 0,
		K("lb_sticky_decisions_total", "result", "down"):    2,
		K("lb_session_store_calls_total"):                   14,
		K("lb_session_store_errors_total"):                  2,

		K("lb_refused_connections_total", "listener", testListener, "reason", "none_up"):       6,
		K("lb_refused_connections_total", "listener", testListener, "reason", "dial_failed"):   2,
		K("lb_refused_connections_total", "listener", testListener, "reason", "no_descriptor"): 0,
		K("lb_refused_connections_total", "listener", testListener, "reason", "slow_head"):     0,
		K("lb_answers_total", "code", "503"):                                                   6,
		K("lb_answers_total", "code", "502"):                                                   2,

		K("lb_backend_connections_total", "pool", "web", "backend", "web-1"):                        10,
		K("lb_backend_active_connections", "pool", "web", "backend", "web-1"):                       2,
		K("lb_backend_received_bytes_total", "pool", "web", "backend", "web-1"):                     2000,
		K("lb_backend_sent_bytes_total", "pool", "web", "backend", "web-1"):                         400,
		K("lb_backend_dial_errors_total", "pool", "web", "backend", "web-1"):                        0,
		K("lb_backend_retries_total", "pool", "web", "backend", "web-1"):                            2,
		K("lb_backend_up", "pool", "web", "backend", "web-1"):                                       1,
		K("lb_backend_last_change_timestamp_seconds", "pool", "web", "backend", "web-1"):            1700000000.5,
		K("lb_backend_http_connections_total", "pool", "web", "backend", "web-1", "method", "GET"):  8,
		K("lb_backend_http_connections_total", "pool", "web", "backend", "web-1", "method", "POST"): 2,

		K("lb_backend_connections_total", "pool", "web", "backend", "b4eb8c70"): 0,
		K("lb_backend_dial_errors_total", "pool", "web", "backend", "b4eb8c70"): 4,
		K("lb_backend_up", "pool", "web", "backend", "b4eb8c70"):                0,

		K("lb_health_probe_duration_seconds_count", "pool", "web"):                 2,
		K("lb_health_probe_duration_seconds_bucket", "pool", "web", "le", "0.005"): 1,
		K("lb_health_probe_duration_seconds_bucket", "pool", "web", "le", "1"):     2,

		K("lb_pool_backends", "pool", "web", "state", "up"):   1,
		K("lb_pool_backends", "pool", "web", "state", "down"): 1,
		K("lb_pool_connections_total", "pool", "web"):         10,
		K("lb_pool_dial_errors_total", "pool", "web"):         4,
		K("lb_pool_received_bytes_total", "pool", "web"):      2000,
		K("lb_queued_connections"):                            0,
	}
	for k, w := range want {
		got, ok := v[k]
		if !ok {
			t.Errorf("%s: missing from the scrape", k)
			continue
		}
		if got != w {
			t.Errorf("%s = %v, want %v", k, got, w)
		}
	}
	for _, absent := range []string{
		K("lb_backend_last_change_timestamp_seconds", "pool", "web", "backend", "b4eb8c70"),        // never changed
		K("lb_backend_http_connections_total", "pool", "web", "backend", "web-1", "method", "PUT"), // zero: not sent
	} {
		if _, ok := v[absent]; ok {
			t.Errorf("%s is in the scrape; want it left out", absent)
		}
	}
	for _, k := range []string{"go_goroutines", "process_open_fds"} {
		if _, ok := v[k]; !ok {
			t.Errorf("%s missing: the Go and process collectors are not registered", k)
		}
	}

	// A second scrape reports the same values: the Snapshot is reset, not added to.
	v2 := scrape(t, m)
	if a, b := v[K("lb_accepted_connections_total", "listener", testListener)], v2[K("lb_accepted_connections_total", "listener", testListener)]; a != b {
		t.Errorf("accepted: first scrape %v, second %v", a, b)
	}
	if src.calls != 2 {
		t.Errorf("Source.Collect called %d times for 2 scrapes", src.calls)
	}
}

func TestForgetPoolDropsItsProbeSeries(t *testing.T) {
	m := New(Options{})
	m.ProbeObserver("gone")("a", time.Millisecond)
	m.ProbeObserver("kept")("a", time.Millisecond)
	m.ForgetPool("gone")
	v := scrape(t, m)
	if _, ok := v[metricstest.Key("lb_health_probe_duration_seconds_count", "pool", "gone")]; ok {
		t.Error("a forgotten pool's probe histogram is still scraped")
	}
	if got := v[metricstest.Key("lb_health_probe_duration_seconds_count", "pool", "kept")]; got != 1 {
		t.Errorf("kept pool's probe count = %v, want 1", got)
	}
}

func TestWithoutSourceOnlyProcessWideMetrics(t *testing.T) {
	v := scrape(t, New(Options{}))
	if _, ok := v[metricstest.Key("lb_accepted_connections_total", "listener", testListener)]; ok {
		t.Error("lb_accepted_connections_total reported with no Source")
	}
	n, ok := v["lb_open_fds"]
	if !ok || n < 3 {
		t.Errorf("lb_open_fds = %v (present %v): want the real count, at least stdin, stdout, stderr", n, ok)
	}
}

func TestOpenFDsErrorLeavesOutOnlyThatMetric(t *testing.T) {
	m := New(Options{OpenFDs: func() (int, error) { return 0, errors.New("no /proc") }})
	m.SetSource(knownSource())
	v := scrape(t, m)
	if _, ok := v["lb_open_fds"]; ok {
		t.Error("lb_open_fds reported although counting failed")
	}
	if v[metricstest.Key("lb_accepted_connections_total", "listener", testListener)] != 30 {
		t.Errorf("lb_accepted_connections_total = %v, want 30: one failing metric must not cost the others", v[metricstest.Key("lb_accepted_connections_total", "listener", testListener)])
	}
}

func TestHistogramBuckets(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{-time.Second, 0, time.Millisecond, time.Millisecond + 1, time.Hour, time.Hour + 1} {
		h.Observe(d)
	}
	c := h.cumulative()
	for le, want := range map[float64]uint64{0.001: 3, 0.005: 4, 3600: 5} {
		if c[le] != want {
			t.Errorf("bucket le=%v: %d, want %d", le, c[le], want)
		}
	}
	if h.Count() != 6 {
		t.Errorf("count %d, want 6", h.Count())
	}
	if want := 2*time.Hour + 2*time.Millisecond + 2; h.Sum() != want {
		t.Errorf("sum %v, want %v", h.Sum(), want)
	}
}

func TestMethodOf(t *testing.T) {
	for in, want := range map[string]Method{
		"GET": MethodGet, "PATCH": MethodPatch, "OPTIONS": MethodOptions, "get": MethodOther,
		"PROPFIND": MethodOther, "": MethodOther, "GETX": MethodOther,
	} {
		if got := MethodOf([]byte(in)); got != want {
			t.Errorf("MethodOf(%q) = %v, want %v", in, got, want)
		}
	}
}
