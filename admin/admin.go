// Package admin serves lb's admin listener: liveness and readiness for Kubernetes, the backend
// API (list, add, drain, enable, re-weight, remove), a JSON stats endpoint, the status page
// and, when given, Prometheus metrics.
//
// It owns no state of lb's: every answer comes from the Backends and the funcs of Config, so
// the handlers are small and the data path never waits for them.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"lb/control"
	"lb/ring"
	"lb/serversfile"
)

// Backends is what the API changes. Each method that takes an id reports false, changing
// nothing, when no backend has it. Implementations are safe for concurrent use.
type Backends interface {
	// List returns every backend, in ring order.
	List() []control.Backend
	// Add adds b, down until its first good probe. It fails, changing nothing, when b's id or
	// address is taken (wrapping ring.ErrDuplicate) or b is otherwise refused.
	Add(b ring.Backend) error
	// Drain stops new connections to the backend; open ones finish.
	Drain(id string) bool
	// Enable ends a drain: the backend takes new connections again while it is up.
	Enable(id string) bool
	// SetWeight sets the backend's weight (1 to serversfile.MaxWeight).
	SetWeight(id string, weight int) bool
	// Remove drains the backend, then takes it out; its open connections finish.
	Remove(id string) bool
}

// Stats is the JSON of GET /stats, for the status page and scripts. Version and uptime are
// filled in by the server; the rest by Config.Stats.
type Stats struct {
	Version       string            `json:"version"`
	Started       time.Time         `json:"started"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	Listeners     []string          `json:"listeners"`
	Accepted      uint64            `json:"accepted"`       // connections accepted
	Active        int64             `json:"active"`         // connections open now
	Sniff         map[string]uint64 `json:"sniff"`          // outcomes of reading first bytes, by kind
	Refused       map[string]uint64 `json:"refused"`        // connections refused or closed early, by reason
	Counters      map[string]uint64 `json:"counters"`       // any other counter, by name
	Gauges        map[string]int64  `json:"gauges"`         // any other value of now, by name
	Goroutines    int               `json:"goroutines"`     // of the lb process
	BackendsUp    int               `json:"backends_up"`    // filled in by the server
	BackendsTotal int               `json:"backends_total"` // filled in by the server
}

// Config is what a Server serves.
type Config struct {
	Backends Backends // required
	// Token, when set, must come as "Authorization: Bearer <Token>" with every request but
	// /healthz, /readyz and the page at /. The caller requires one on a non-loopback address.
	Token string
	// Metrics, when set, serves GET /metrics (Prometheus text format).
	Metrics http.Handler
	// Stats, when set, feeds GET /stats; it must not block for long.
	Stats func() Stats
	// Accepting reports whether lb accepts connections; GET /readyz needs it and a backend up.
	// Nil counts as accepting.
	Accepting func() bool
	// Upgrade, when set, serves POST /upgrade: it returns once a new lb process has taken
	// over, or why none did.
	Upgrade func() error
	Version string
	Started time.Time // when lb started, for uptime; zero: when New was called
	Log     zerolog.Logger
}

// Server answers the admin listener's requests. Create it with New; it is an http.Handler.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	handler http.Handler // mux behind the guards (guard.go)
}

// New returns the admin handler for cfg.
func New(cfg Config) *Server {
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.Handle("GET /backends", s.auth(s.list))
	s.mux.Handle("POST /backends", s.auth(s.add))
	s.mux.Handle("POST /backends/{id}/drain", s.auth(s.drain))
	s.mux.Handle("POST /backends/{id}/enable", s.auth(s.enable))
	s.mux.Handle("PATCH /backends/{id}", s.auth(s.setWeight))
	s.mux.Handle("DELETE /backends/{id}", s.auth(s.remove))
	s.mux.Handle("GET /stats", s.auth(s.stats))
	if cfg.Upgrade != nil {
		s.mux.Handle("POST /upgrade", s.auth(s.upgrade))
	}
	if cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", s.auth(cfg.Metrics.ServeHTTP))
	}
	s.handler = hostGuard(cfg.Token, crossOrigin(jsonGuard(s.mux)))
	return s
}

// ServeHTTP answers one request. Without a token it answers only requests whose Host is a
// loopback name or address (or the listener's own); from a browser it takes no cross-origin
// change; a body it takes only as JSON (see guard.go).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// MetricsHandler is the handler of a metrics-only listener, as HAProxy's Prometheus frontend
// is: GET /metrics (when Config.Metrics is set), /healthz and /readyz, without a token and
// whatever the Host; 404 for any other path and 405 for any other method. It reads and
// changes nothing else.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	return mux
}

// auth lets a request through when no token is set or it brings the token.
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + s.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lb admin"`)
			writeError(w, http.StatusUnauthorized, "send the admin token: Authorization: Bearer <--admin-token>")
			return
		}
		next(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	io.WriteString(w, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Accepting != nil && !s.cfg.Accepting() {
		http.Error(w, "not ready: lb does not accept connections", http.StatusServiceUnavailable)
		return
	}
	for _, b := range s.cfg.Backends.List() {
		if b.State == control.Up {
			io.WriteString(w, "ok\n")
			return
		}
	}
	http.Error(w, "not ready: no backend is up", http.StatusServiceUnavailable)
}

func (s *Server) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Backends.List())
}

// newBackend is the body of POST /backends.
type newBackend struct {
	Addr   string `json:"addr"`
	ID     string `json:"id"`
	Weight int    `json:"weight"`
}

func (s *Server) add(w http.ResponseWriter, r *http.Request) {
	var nb newBackend
	if !decode(w, r, &nb) {
		return
	}
	if nb.Addr == "" {
		writeError(w, http.StatusBadRequest, `"addr": want host:port or http://host:port, e.g. {"addr": "127.0.0.1:8000"}`)
		return
	}
	// The servers file's rules and messages, each field checked whole: no option the API does
	// not name (proxy=, check=, maxconn=) can ride in on a field.
	b, err := serversfile.NewBackend(nb.Addr, nb.ID, nb.Weight)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.cfg.Backends.Add(b); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ring.ErrDuplicate) {
			status = http.StatusConflict
		}
		writeError(w, status, err.Error())
		return
	}
	s.cfg.Log.Info().Str("id", b.ID).Str("addr", b.Addr).Int("weight", b.Weight).Msg("backend added by the admin API")
	s.answer(w, http.StatusCreated, b.ID)
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	s.change(w, r, "drained", s.cfg.Backends.Drain)
}

func (s *Server) enable(w http.ResponseWriter, r *http.Request) {
	s.change(w, r, "enabled", s.cfg.Backends.Enable)
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	s.change(w, r, "removed", s.cfg.Backends.Remove)
}

// change applies op to the backend named in the path and answers with its state after.
func (s *Server) change(w http.ResponseWriter, r *http.Request, what string, op func(string) bool) {
	id := r.PathValue("id")
	if !op(id) {
		s.notFound(w, id)
		return
	}
	s.cfg.Log.Info().Str("id", id).Msg("backend " + what + " by the admin API")
	s.answer(w, http.StatusOK, id)
}

// weightChange is the body of PATCH /backends/{id}.
type weightChange struct {
	Weight *int `json:"weight"`
}

func (s *Server) setWeight(w http.ResponseWriter, r *http.Request) {
	var wc weightChange
	if !decode(w, r, &wc) {
		return
	}
	if wc.Weight == nil || *wc.Weight < 1 || *wc.Weight > serversfile.MaxWeight {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`"weight": want 1-%d, e.g. {"weight": 2}`, serversfile.MaxWeight))
		return
	}
	s.change(w, r, "re-weighted", func(id string) bool { return s.cfg.Backends.SetWeight(id, *wc.Weight) })
}

// answer writes the backend with this id as List shows it now (or just its id, when it has
// gone meanwhile).
func (s *Server) answer(w http.ResponseWriter, status int, id string) {
	for _, b := range s.cfg.Backends.List() {
		if b.ID == id {
			writeJSON(w, status, b)
			return
		}
	}
	writeJSON(w, status, map[string]string{"id": id})
}

func (s *Server) notFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("no backend has id %q: GET /backends lists them", id))
}

// upgrade starts the binary at lb's path in place of this process (as SIGUSR2 does).
func (s *Server) upgrade(w http.ResponseWriter, _ *http.Request) {
	if err := s.cfg.Upgrade(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"upgraded": true})
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	var st Stats
	if s.cfg.Stats != nil {
		st = s.cfg.Stats()
	}
	st.Version, st.Started = s.cfg.Version, s.cfg.Started
	st.UptimeSeconds = time.Since(s.cfg.Started).Seconds()
	for _, b := range s.cfg.Backends.List() {
		st.BackendsTotal++
		if b.State == control.Up {
			st.BackendsUp++
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// maxBody bounds request bodies: a backend is a few dozen bytes.
const maxBody = 64 << 10

// decode reads a JSON body into v, refusing unknown fields and trailing data; on failure it
// has answered 400 and returns false.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
