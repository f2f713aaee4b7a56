package metrics_test

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	"lb/metrics"
)

// eventLoop stands for an l4 loop: it owns its counters, and other goroutines reach it only
// through its call queue.
type eventLoop struct {
	calls    chan func()
	counters metrics.Counters
	listener metrics.ListenerCounters            // of its one listener
	backends map[string]*metrics.BackendCounters // by backend id; an entry is made at the first dial, not per connection
}

func (l *eventLoop) run() {
	for f := range l.calls {
		f()
	}
}

// closeConn is the close stage: plain increments, on the loop.
func (l *eventLoop) closeConn(b *metrics.BackendCounters, method []byte, up, down uint64, d time.Duration) {
	l.listener.Active--
	l.counters.Durations.Observe(d)
	l.counters.Sniff[metrics.SniffHTTP1]++
	b.Active--
	b.BytesSent += up
	b.BytesReceived += down
	b.HTTP[metrics.MethodOf(method)]++
}

// server is the Source: at a scrape it asks each loop in turn to add its counters.
type server struct {
	loops []*eventLoop
	ids   []string // the ring's backends, in order
}

func (s *server) Collect(snap *metrics.Snapshot) {
	for _, id := range s.ids {
		snap.AddBackend("web", id).Up = true
	}
	for _, l := range s.loops {
		done := make(chan struct{})
		l.calls <- func() { // runs on the loop: only it reads its integers
			snap.Counters.Add(&l.counters)
			snap.AddListener("127.0.0.1:7777", &l.listener)
			for i := range snap.Backends {
				if b := l.backends[snap.Backends[i].ID]; b != nil {
					snap.Backends[i].BackendCounters.Add(b)
				}
			}
			close(done)
		}
		<-done
	}
}

func Example() {
	srv := &server{ids: []string{"web-1", "web-2"}}
	for range 2 {
		l := &eventLoop{calls: make(chan func()), backends: map[string]*metrics.BackendCounters{}}
		go l.run()
		defer close(l.calls)
		srv.loops = append(srv.loops, l)
	}
	// Each loop accepts and dials one connection to web-1, then closes it.
	for _, l := range srv.loops {
		done := make(chan struct{})
		l.calls <- func() {
			b := &metrics.BackendCounters{}
			l.backends["web-1"] = b
			l.listener.Accepted++
			l.listener.Active++
			b.Connections++
			b.Active++
			l.closeConn(b, []byte("GET"), 80, 1200, 4*time.Millisecond)
			close(done)
		}
		<-done
	}

	m := metrics.New(metrics.Options{Version: "example"})
	m.SetSource(srv)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range []string{
		`lb_accepted_connections_total{listener="127.0.0.1:7777"} 2`,
		`lb_backend_connections_total{backend="web-1",pool="web"} 2`,
		`lb_backend_received_bytes_total{backend="web-1",pool="web"} 2400`,
		`lb_backend_http_connections_total{backend="web-1",method="GET",pool="web"} 2`,
		`lb_backend_connections_total{backend="web-2",pool="web"} 0`,
	} {
		fmt.Println(contains(rec.Body.String(), line), line)
	}
	// Output:
	// true lb_accepted_connections_total{listener="127.0.0.1:7777"} 2
	// true lb_backend_connections_total{backend="web-1",pool="web"} 2
	// true lb_backend_received_bytes_total{backend="web-1",pool="web"} 2400
	// true lb_backend_http_connections_total{backend="web-1",method="GET",pool="web"} 2
	// true lb_backend_connections_total{backend="web-2",pool="web"} 0
}

func contains(body, line string) bool { return slices.Contains(strings.Split(body, "\n"), line) }
