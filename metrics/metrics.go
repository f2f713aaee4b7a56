// Package metrics exports lb's counters in the Prometheus text format. The data path keeps
// plain integers per event loop (Counters, BackendCounters, Histogram); a custom
// prometheus.Collector asks a Source to sum them into a Snapshot at scrape time and turns
// that into const metrics, as node_exporter's collectors do. Nothing here runs per
// connection except the Add and Observe methods of those plain structs.
package metrics

import (
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Source fills a Snapshot at scrape time: l4's Server implements it by asking each loop,
// through its call queue, to add its Counters and per-backend BackendCounters into s (so
// only a loop's goroutine reads its integers), and by adding one row per backend of the ring
// with its up state and last change.
//
// Collect is called from the scrape's goroutine, never from a loop, one call at a time, with
// s already Reset. It may wait for the loops, and must return once they answered or stopped.
type Source interface {
	Collect(s *Snapshot)
}

// Options are what Metrics reports besides its Source.
type Options struct {
	Version string // lb's version, the version label of lb_build_info
	// OpenFDs counts lb's open descriptors for lb_open_fds; nil counts /proc/self/fd.
	OpenFDs func() (int, error)
	// BackendSeries is how many backends of each pool get their own traffic series (the
	// lb_backend_* counters), in the pool's order; 0: DefaultBackendSeries. Every backend
	// has its lb_backend_up, and every pool its lb_pool_* sums over all of its backends.
	BackendSeries int
}

// DefaultBackendSeries is Options.BackendSeries when 0: past 1,000 backends in a pool, a
// scrape's size and lb's memory at a scrape stay bounded (about 80 bytes a backend for
// lb_backend_up), and the pool's sums tell its traffic.
const DefaultBackendSeries = 1000

// Metrics is lb's Prometheus registry: the lb_* collector over a Source, health probe
// durations, and the Go runtime and process collectors. Its methods are safe for concurrent
// use.
type Metrics struct {
	reg    *prometheus.Registry
	probes *prometheus.HistogramVec
	c      *collector
}

// ProbeBuckets are the upper bounds, in seconds, of lb_health_probe_duration_seconds.
var ProbeBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// New returns a registry with every collector registered and no Source yet: until SetSource,
// a scrape has the probe durations, build info, open descriptors, Go and process metrics.
func New(opts Options) *Metrics {
	if opts.OpenFDs == nil {
		opts.OpenFDs = countFDs
	}
	if opts.BackendSeries <= 0 {
		opts.BackendSeries = DefaultBackendSeries
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		probes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lb_health_probe_duration_seconds",
			Help:    "Time the health probes (TCP or HTTP) of the pool's backends took, failed ones included.",
			Buckets: ProbeBuckets,
		}, []string{"pool"}),
		c: newCollector(opts),
	}
	m.reg.MustRegister(
		m.c, m.probes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// SetSource sets where the lb_* counters come from; nil stops reporting them.
func (m *Metrics) SetSource(src Source) {
	m.c.mu.Lock()
	m.c.src = src
	m.c.mu.Unlock()
}

// Handler serves the registry in the Prometheus exposition formats: mount it at GET /metrics.
// A metric that cannot be read (lb_open_fds without /proc) is left out; the rest is served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry returns the registry, for a caller that adds its own collectors or gathers
// without HTTP.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ProbeObserver returns the function that records how long one health probe of a backend
// of pool took (health.Config.OnProbe): one histogram per pool, whatever its size. The
// function is an atomic add, safe for concurrent use from the prober's goroutines.
func (m *Metrics) ProbeObserver(pool string) func(backendID string, d time.Duration) {
	h := m.probes.WithLabelValues(pool)
	return func(_ string, d time.Duration) { h.Observe(d.Seconds()) }
}

// ForgetPool drops the probe histogram of a pool a reload removed, so its series leaves the
// scrape.
func (m *Metrics) ForgetPool(pool string) {
	m.probes.DeleteLabelValues(pool)
}

// countFDs counts the entries of /proc/self/fd, less the one it opens to read them.
func countFDs() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	return len(names) - 1, err
}

// collector is the lb_* prometheus.Collector over a Source.
type collector struct {
	opts Options

	mu    sync.Mutex // one scrape at a time uses snap and pools
	src   Source
	snap  Snapshot
	pools []poolSum

	buildInfo, openFDs                                       *prometheus.Desc
	accepted, active, queued, duration                       *prometheus.Desc
	sniff, sticky, storeCalls, storeErrors, refused, answers *prometheus.Desc
	poolBackends, poolConns, poolActive                      *prometheus.Desc
	poolReceived, poolSent, poolDialErrors, poolRetries      *prometheus.Desc
	conns, backendActive, bytesReceived, bytesSent           *prometheus.Desc
	dialErrors, retries, up, lastChange, httpConns           *prometheus.Desc
	revision                                                 string
}

// poolSum is a pool's row of sums at a scrape.
type poolSum struct {
	name     string
	up, down int
	BackendCounters
}

func newCollector(opts Options) *collector {
	be := []string{"pool", "backend"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		opts:           opts,
		revision:       revision(),
		buildInfo:      d("lb_build_info", "Always 1; the labels say which lb runs.", "version", "revision", "goversion"),
		openFDs:        d("lb_open_fds", "Descriptors lb holds open: two per connection, pipes, listeners, probes."),
		accepted:       d("lb_accepted_connections_total", "Client connections the listener accepted.", "listener"),
		active:         d("lb_active_connections", "Client connections the listener accepted and lb has not closed yet.", "listener"),
		queued:         d("lb_queued_connections", "Client connections waiting for a backend slot now: every backend up of their pool is at its maxconn."),
		duration:       d("lb_connection_duration_seconds", "Lifetime of closed client connections, accept to close."),
		sniff:          d("lb_sniff_total", "Client connections by what sniffing made of their first bytes.", "kind"),
		sticky:         d("lb_sticky_decisions_total", "Sticky routing decisions (with --sticky-cookie or --session-cookie), by result.", "result"),
		storeCalls:     d("lb_session_store_calls_total", "Session store lookups and records."),
		storeErrors:    d("lb_session_store_errors_total", "Session store calls that failed or timed out; the ring decided instead."),
		refused:        d("lb_refused_connections_total", "Client connections of the listener that lb closed or answered itself, without a backend, by reason.", "listener", "reason"),
		answers:        d("lb_answers_total", "HTTP answers lb wrote itself, by status code.", "code"),
		poolBackends:   d("lb_pool_backends", "Backends of the pool, by state: up or down as the health checks see them.", "pool", "state"),
		poolConns:      d("lb_pool_connections_total", "Client connections handed to a backend of the pool (the dial succeeded).", "pool"),
		poolActive:     d("lb_pool_active_connections", "Connections open to the pool's backends.", "pool"),
		poolReceived:   d("lb_pool_received_bytes_total", "Bytes lb read from the pool's backends (downloads), of closed connections.", "pool"),
		poolSent:       d("lb_pool_sent_bytes_total", "Bytes lb wrote to the pool's backends (uploads, replayed heads included), of closed connections.", "pool"),
		poolDialErrors: d("lb_pool_dial_errors_total", "Dials to the pool's backends that failed.", "pool"),
		poolRetries:    d("lb_pool_retries_total", "Dials to the pool's backends made after a dial to another backend failed.", "pool"),
		conns:          d("lb_backend_connections_total", "Client connections handed to the backend (the dial succeeded).", be...),
		backendActive:  d("lb_backend_active_connections", "Connections open to the backend.", be...),
		bytesReceived:  d("lb_backend_received_bytes_total", "Bytes lb read from the backend (downloads), of closed connections.", be...),
		bytesSent:      d("lb_backend_sent_bytes_total", "Bytes lb wrote to the backend (uploads, replayed heads included), of closed connections.", be...),
		dialErrors:     d("lb_backend_dial_errors_total", "Dials to the backend that failed.", be...),
		retries:        d("lb_backend_retries_total", "Dials to the backend made after a dial to another backend failed.", be...),
		up:             d("lb_backend_up", "1 if the health checks see the backend up, else 0.", be...),
		lastChange:     d("lb_backend_last_change_timestamp_seconds", "When the backend last went up or down, in Unix seconds.", be...),
		httpConns:      d("lb_backend_http_connections_total", "Client connections handed to the backend whose first request head parsed as HTTP/1.x, by its method.", "pool", "backend", "method"),
	}
}

// Describe sends every lb_* descriptor.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo, c.openFDs, c.accepted, c.active, c.queued, c.duration, c.sniff, c.sticky,
		c.storeCalls, c.storeErrors, c.refused, c.answers,
		c.poolBackends, c.poolConns, c.poolActive, c.poolReceived, c.poolSent, c.poolDialErrors, c.poolRetries,
		c.conns, c.backendActive, c.bytesReceived, c.bytesSent, c.dialErrors, c.retries, c.up, c.lastChange, c.httpConns,
	} {
		ch <- d
	}
}

// Collect fills the Snapshot from the Source and sends it as const metrics: the global
// counters, a row of sums per pool, lb_backend_up for every backend, and the traffic series
// of the first Options.BackendSeries backends of each pool.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	ch <- prometheus.MustNewConstMetric(c.buildInfo, gauge, 1, c.opts.Version, c.revision, runtime.Version())
	if n, err := c.opts.OpenFDs(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.openFDs, gauge, float64(n))
	} else {
		ch <- prometheus.NewInvalidMetric(c.openFDs, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.src == nil {
		return
	}
	s := &c.snap
	s.Reset()
	c.src.Collect(s)

	for i := range s.Listeners {
		l := &s.Listeners[i]
		ch <- prometheus.MustNewConstMetric(c.accepted, counter, float64(l.Accepted), l.Name)
		ch <- prometheus.MustNewConstMetric(c.active, gauge, float64(l.Active), l.Name)
		for r, n := range l.Refused {
			ch <- prometheus.MustNewConstMetric(c.refused, counter, float64(n), l.Name, RefuseReason(r).String())
		}
	}
	ch <- prometheus.MustNewConstMetric(c.queued, gauge, float64(s.Queued))
	ch <- prometheus.MustNewConstHistogram(c.duration, s.Durations.Count(), s.Durations.Sum().Seconds(), s.Durations.cumulative())
	for k, n := range s.Sniff {
		ch <- prometheus.MustNewConstMetric(c.sniff, counter, float64(n), SniffKind(k).String())
	}
	for r, n := range s.Sticky {
		ch <- prometheus.MustNewConstMetric(c.sticky, counter, float64(n), StickyResult(r).String())
	}
	ch <- prometheus.MustNewConstMetric(c.storeCalls, counter, float64(s.StoreCalls))
	ch <- prometheus.MustNewConstMetric(c.storeErrors, counter, float64(s.StoreErrors))
	for a, n := range s.Answers {
		ch <- prometheus.MustNewConstMetric(c.answers, counter, float64(n), Answer(a).String())
	}

	c.pools = c.pools[:0]
	inPool := 0 // rows of the current pool so far
	for i := range s.Backends {
		b := &s.Backends[i]
		if len(c.pools) == 0 || c.pools[len(c.pools)-1].name != b.Pool {
			c.pools = append(c.pools, poolSum{name: b.Pool})
			inPool = 0
		}
		p := &c.pools[len(c.pools)-1]
		p.BackendCounters.Add(&b.BackendCounters)
		if b.Up {
			p.up++
		} else {
			p.down++
		}
		ch <- prometheus.MustNewConstMetric(c.up, gauge, boolValue(b.Up), b.Pool, b.ID)
		if inPool++; inPool <= c.opts.BackendSeries {
			c.backendSeries(ch, b)
		}
	}
	for i := range c.pools {
		p := &c.pools[i]
		ch <- prometheus.MustNewConstMetric(c.poolBackends, gauge, float64(p.up), p.name, "up")
		ch <- prometheus.MustNewConstMetric(c.poolBackends, gauge, float64(p.down), p.name, "down")
		ch <- prometheus.MustNewConstMetric(c.poolConns, counter, float64(p.Connections), p.name)
		ch <- prometheus.MustNewConstMetric(c.poolActive, gauge, float64(p.Active), p.name)
		ch <- prometheus.MustNewConstMetric(c.poolReceived, counter, float64(p.BytesReceived), p.name)
		ch <- prometheus.MustNewConstMetric(c.poolSent, counter, float64(p.BytesSent), p.name)
		ch <- prometheus.MustNewConstMetric(c.poolDialErrors, counter, float64(p.DialErrors), p.name)
		ch <- prometheus.MustNewConstMetric(c.poolRetries, counter, float64(p.Retries), p.name)
	}
}

// backendSeries sends the traffic series of one backend.
func (c *collector) backendSeries(ch chan<- prometheus.Metric, b *Backend) {
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	ch <- prometheus.MustNewConstMetric(c.conns, counter, float64(b.Connections), b.Pool, b.ID)
	ch <- prometheus.MustNewConstMetric(c.backendActive, gauge, float64(b.Active), b.Pool, b.ID)
	ch <- prometheus.MustNewConstMetric(c.bytesReceived, counter, float64(b.BytesReceived), b.Pool, b.ID)
	ch <- prometheus.MustNewConstMetric(c.bytesSent, counter, float64(b.BytesSent), b.Pool, b.ID)
	ch <- prometheus.MustNewConstMetric(c.dialErrors, counter, float64(b.DialErrors), b.Pool, b.ID)
	ch <- prometheus.MustNewConstMetric(c.retries, counter, float64(b.Retries), b.Pool, b.ID)
	if !b.LastChange.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.lastChange, gauge, float64(b.LastChange.UnixNano())/1e9, b.Pool, b.ID)
	}
	for m, n := range b.HTTP {
		if n > 0 { // ten methods for each of many backends would be mostly zeros
			ch <- prometheus.MustNewConstMetric(c.httpConns, counter, float64(n), b.Pool, b.ID, Method(m).String())
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// revision is the VCS revision the binary was built from, or "unknown" (go build
// -buildvcs=false, go test).
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
