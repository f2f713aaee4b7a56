package metrics

import "time"

// SniffKind is what sniffing made of a connection's first bytes, the kind label of
// lb_sniff_total.
type SniffKind uint8

// The sniff outcomes. A head that ended neither HTTP/1.x, h2 nor TLS (malformed, empty, any
// other protocol) is SniffOther.
const (
	SniffHTTP1     SniffKind = iota // a complete HTTP/1.x request head
	SniffH2                         // the HTTP/2 prior-knowledge preface
	SniffTLS                        // a TLS ClientHello record
	SniffOther                      // anything else, malformed heads and empty connections included
	SniffTimeout                    // the head was still incomplete at --sniff-timeout
	SniffOversized                  // the head outgrew --max-header-bytes or --max-sniff-memory
	NumSniffKinds
)

var sniffNames = [NumSniffKinds]string{"http1", "h2", "tls", "other", "timeout", "oversized"}

// String returns the label value of k; the returned strings are constants, so an access
// log line can carry them without allocating.
func (k SniffKind) String() string {
	if k < NumSniffKinds {
		return sniffNames[k]
	}
	return "unknown"
}

// StickyResult is how a sticky decision ended, the result label of lb_sticky_decisions_total.
// Only connections routed with a sticky mode on (--sticky-cookie, --session-cookie) count.
type StickyResult uint8

// The sticky results.
const (
	StickyHit     StickyResult = iota // the cookie or learned session named an up backend, and it took the connection
	StickyMiss                        // no sticky cookie and no known session: the ring decided
	StickyInvalid                     // a sticky cookie that names no backend
	StickyDown                        // the named backend was down or refused the connection: the ring decided
	NumStickyResults
)

var stickyNames = [NumStickyResults]string{"hit", "miss", "invalid", "down"}

// String returns the label value of r (a constant string).
func (r StickyResult) String() string {
	if r < NumStickyResults {
		return stickyNames[r]
	}
	return "unknown"
}

// RefuseReason is why lb closed or answered a connection without a backend, the reason label
// of lb_refused_connections_total.
type RefuseReason uint8

// The refusal reasons.
const (
	RefuseNoneUp       RefuseReason = iota // no backend was up (HTTP clients also get a 503)
	RefuseDialFailed                       // every dial failed (HTTP clients also get a 502)
	RefuseNoDescriptor                     // lb had no descriptor for the backend socket within --connect-timeout (503)
	RefuseSlowHead                         // closed undecided at --sniff-timeout (--sniff-timeout-action close)
	RefuseIPConns                          // its address held --per-ip-max-conns already (HTTP clients also get a 429)
	RefuseIPRate                           // its address opened connections faster than --per-ip-rate (HTTP clients also get a 429)
	RefuseBadProxy                         // a trusted balancer's PROXY header was malformed, truncated or missing
	RefuseNoRoute                          // no route of its listener matched (HTTP clients get the listener's status, 503 by default)
	RefuseQueueTimeout                     // every backend up stayed at its maxconn for --queue-timeout (HTTP clients also get a 503)
	NumRefuseReasons
)

var refuseNames = [NumRefuseReasons]string{"none_up", "dial_failed", "no_descriptor", "slow_head", "per_ip_conns", "per_ip_rate", "bad_proxy_header", "no_route", "queue_timeout"}

// String returns the label value of r (a constant string).
func (r RefuseReason) String() string {
	if r < NumRefuseReasons {
		return refuseNames[r]
	}
	return "unknown"
}

// Answer is a response lb writes itself, the code label of lb_answers_total.
type Answer uint8

// The answers lb writes.
const (
	Answer503 Answer = iota // Service Unavailable: no backend up, or lb out of descriptors
	Answer502               // Bad Gateway: every dial failed
	Answer429               // Too Many Requests: a per-address limit
	NumAnswers
)

var answerCodes = [NumAnswers]string{"503", "502", "429"}

// String returns the status code of a as the label value (a constant string).
func (a Answer) String() string {
	if a < NumAnswers {
		return answerCodes[a]
	}
	return "unknown"
}

// Method is the method of a connection's first HTTP/1.x request, the method label of
// lb_backend_http_connections_total. Methods outside the standard nine count as MethodOther, so the
// label's values are bounded whatever clients send.
type Method uint8

// The methods, RFC 9110's plus PATCH.
const (
	MethodGet Method = iota
	MethodHead
	MethodPost
	MethodPut
	MethodDelete
	MethodConnect
	MethodOptions
	MethodTrace
	MethodPatch
	MethodOther
	NumMethods
)

var methodNames = [NumMethods]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other"}

// String returns the label value of m (a constant string).
func (m Method) String() string {
	if m < NumMethods {
		return methodNames[m]
	}
	return "other"
}

// MethodOf classifies a request method as sent (case-sensitive, as RFC 9110 says). It does
// not allocate: call it on the loop with httpsniff.Head.Method.
func MethodOf(b []byte) Method {
	for m := MethodGet; m < MethodOther; m++ {
		if string(b) == methodNames[m] { // compared in place: no conversion is made
			return m
		}
	}
	return MethodOther
}

// Counters are the global counters of one event loop, or their sum over every loop in a
// Snapshot. They are plain integers: a loop increments its own without locks or atomics,
// and only its goroutine reads them (Add, at a scrape, on the loop). The zero value is
// ready to use.
type Counters struct {
	Accepted    uint64                   // connections accepted
	Active      int64                    // connections accepted and not yet closed
	Durations   Histogram                // lifetimes of closed connections
	Sniff       [NumSniffKinds]uint64    // by SniffKind
	Sticky      [NumStickyResults]uint64 // by StickyResult
	StoreCalls  uint64                   // session store lookups and records made
	StoreErrors uint64                   // of those, the ones that failed or timed out
	Refused     [NumRefuseReasons]uint64 // by RefuseReason
	Answers     [NumAnswers]uint64       // by Answer
	Queued      int64                    // connections waiting for a backend slot now (a Source fills it at a scrape)
}

// Add adds o into c. It does not allocate.
func (c *Counters) Add(o *Counters) {
	c.Accepted += o.Accepted
	c.Active += o.Active
	c.Durations.Add(&o.Durations)
	for i := range c.Sniff {
		c.Sniff[i] += o.Sniff[i]
	}
	for i := range c.Sticky {
		c.Sticky[i] += o.Sticky[i]
	}
	c.StoreCalls += o.StoreCalls
	c.StoreErrors += o.StoreErrors
	for i := range c.Refused {
		c.Refused[i] += o.Refused[i]
	}
	for i := range c.Answers {
		c.Answers[i] += o.Answers[i]
	}
	c.Queued += o.Queued
}

// BackendCounters are the counters of one backend on one loop, or their sum. Bytes are
// counted from the backend's side: Received is what lb read from the backend (the
// download), Sent is what lb wrote to it (the upload, replayed head included).
type BackendCounters struct {
	Connections   uint64             // connections lb handed to the backend (dial succeeded)
	Active        int64              // of those, still open
	BytesReceived uint64             // bytes read from the backend
	BytesSent     uint64             // bytes written to the backend
	DialErrors    uint64             // dials to the backend that failed (refused, timed out, unreachable)
	Retries       uint64             // dials to the backend made after a dial to another backend failed
	HTTP          [NumMethods]uint64 // connections whose first request head parsed as HTTP/1.x, by Method
}

// Add adds o into b. It does not allocate.
func (b *BackendCounters) Add(o *BackendCounters) {
	b.Connections += o.Connections
	b.Active += o.Active
	b.BytesReceived += o.BytesReceived
	b.BytesSent += o.BytesSent
	b.DialErrors += o.DialErrors
	b.Retries += o.Retries
	for i := range b.HTTP {
		b.HTTP[i] += o.HTTP[i]
	}
}

// ListenerCounters are the counters of one listener on one loop, or their sum.
type ListenerCounters struct {
	Accepted uint64                   // connections accepted
	Active   int64                    // of those, not yet closed
	Refused  [NumRefuseReasons]uint64 // by RefuseReason
}

// Add adds o into l. It does not allocate.
func (l *ListenerCounters) Add(o *ListenerCounters) {
	l.Accepted += o.Accepted
	l.Active += o.Active
	for i := range l.Refused {
		l.Refused[i] += o.Refused[i]
	}
}

// Listener is one listener's row in a Snapshot.
type Listener struct {
	Name string // the listener label: its address as lb listens on it
	ListenerCounters
}

// Backend is one backend's row in a Snapshot.
type Backend struct {
	Pool       string    // the pool label: the name of the backend's pool ("default" with the flags' one pool)
	ID         string    // the backend label: the servers file's id=, or the short hash of the address
	Up         bool      // as the health checks see it now
	LastChange time.Time // when it last went up or down; zero: never (not exported then)
	BackendCounters
}

// Snapshot is what a Source reports at a scrape: the global counters summed over every loop,
// and one row per backend. The collector keeps one Snapshot and resets it before each
// scrape, so the Backends slice keeps its capacity: filling it allocates nothing once it
// has grown to the number of backends.
type Snapshot struct {
	Counters
	Listeners []Listener // the lb_accepted, lb_active and lb_refused series, by listener
	Backends  []Backend
}

// Reset zeroes s and empties Listeners and Backends, keeping their capacity.
func (s *Snapshot) Reset() {
	s.Counters = Counters{}
	clear(s.Listeners)
	s.Listeners = s.Listeners[:0]
	clear(s.Backends) // drop the ID strings of the last scrape
	s.Backends = s.Backends[:0]
}

// AddListener adds o into the row of listener name, made if missing, and into the
// Counters' Accepted, Active and Refused, which sum every listener.
func (s *Snapshot) AddListener(name string, o *ListenerCounters) {
	s.Accepted += o.Accepted
	s.Active += o.Active
	for i := range s.Refused {
		s.Refused[i] += o.Refused[i]
	}
	for i := range s.Listeners {
		if s.Listeners[i].Name == name {
			s.Listeners[i].Add(o)
			return
		}
	}
	s.Listeners = append(s.Listeners, Listener{Name: name, ListenerCounters: *o})
}

// AddBackend appends a zeroed row for backend id of pool and returns it, for the Source to
// fill. The pointer is valid until the next AddBackend. A (pool, id) pair must be distinct
// within a Snapshot, and a pool's rows must be added one after another.
func (s *Snapshot) AddBackend(pool, id string) *Backend {
	s.Backends = append(s.Backends, Backend{Pool: pool, ID: id})
	return &s.Backends[len(s.Backends)-1]
}
