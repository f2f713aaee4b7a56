// Package accesslog writes one line per closed connection, as JSON or for people (zerolog's
// console format). The event loop hands Log a plain Entry; when the log is off, the Logger
// is nil and nothing is formatted or allocated. When it is on, Log formats JSON into a
// pooled zerolog event and copies it into a buffer that a goroutine of its own writes out,
// so a slow disk or a full pipe never holds up a loop: past MaxBuffered the lines are
// dropped, counted and reported.
package accesslog

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Cause is why a connection closed, the cause field of its line.
type Cause uint8

// The causes.
const (
	ClientClosed  Cause = iota // both directions ended, the client's first
	BackendClosed              // both directions ended, the backend's first
	IdleTimeout                // no byte moved for --idle-timeout
	Drain                      // lb shut down and --drain-timeout closed it
	Refused                    // no backend took it: lb answered 503/502 or closed it (see Err)
	Error                      // a reset, a peer gone, or another error: Err says which
	numCauses
)

var causeNames = [numCauses]string{"client_closed", "backend_closed", "idle_timeout", "drain", "refused", "error"}

// String returns the field value of c (a constant string).
func (c Cause) String() string {
	if c < numCauses {
		return causeNames[c]
	}
	return "unknown"
}

// Entry is one closed connection. Log reads it and keeps nothing of it: its byte slices may
// be views into buffers the caller reuses. Empty fields are left out of the line.
type Entry struct {
	Client      netip.AddrPort // the client: the PROXY protocol source when one was accepted
	Listener    string         // the address the client connected to, as lb listens on it
	Pool        string         // the pool its route chose, when there are several
	BackendID   string         // the backend that took the connection; empty if none did
	BackendAddr string         // its address, as dialled
	Sniff       string         // what sniffing found: metrics.SniffKind's names (http1, tls, timeout, ...)
	Method      []byte         // of the first request head, when it parsed as HTTP/1.x
	Host        []byte         // its Host header
	Path        []byte         // its request target, query included
	Sticky      string         // the sticky decision (hit, miss, invalid, down); empty with sticky off
	BytesUp     uint64         // bytes from the client to the backend
	BytesDown   uint64         // bytes from the backend to the client
	Duration    time.Duration  // accept to close
	Cause       Cause
	Err         error // with Error (and Refused, when there is something to say); its text is logged
}

// timeFormat is RFC 3339 with milliseconds: connections close many to a second.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// Config says where the access log goes.
type Config struct {
	// Dest is "off" (or empty), "stdout", "stderr" or a file path; a file is created if
	// missing (mode 0644) and appended to.
	Dest string
	// Format is "json" (the default) or "console" (one readable line, without colours).
	Format string
	// MaxBuffered is how many bytes of lines wait for the writer at most; past it new lines
	// are dropped until it catches up. 0: 1 MiB.
	MaxBuffered int
	// Log receives the access log's own troubles: failed writes, dropped lines.
	Log zerolog.Logger
}

// ErrFormat is returned (wrapped) by Open for a Format other than json or console.
var ErrFormat = errors.New("access log format: want json or console")

// Logger writes access log lines. A nil *Logger is a log that is off: every method may be
// called on it and does nothing. Log may be called from many goroutines at once.
type Logger struct {
	zl zerolog.Logger
	w  *asyncWriter
}

// Open starts the access log cfg describes, or returns nil (off) for Dest "off" or "".
// Close it to write the lines still buffered.
func Open(cfg Config) (*Logger, error) {
	var console bool
	switch cfg.Format {
	case "", "json":
	case "console":
		console = true
	default:
		return nil, fmt.Errorf("%w, not %q", ErrFormat, cfg.Format)
	}
	var out *output
	switch cfg.Dest {
	case "", "off":
		return nil, nil
	case "stdout":
		out = &output{file: os.Stdout}
	case "stderr":
		out = &output{file: os.Stderr}
	default:
		f, err := openFile(cfg.Dest)
		if err != nil {
			return nil, err
		}
		out = &output{file: f, path: cfg.Dest}
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = 1 << 20
	}
	var dst io.Writer = out
	if console {
		dst = zerolog.ConsoleWriter{
			Out: out, NoColor: true, TimeFormat: timeFormat, PartsExclude: []string{zerolog.LevelFieldName},
			FieldsOrder: []string{"client", "listener", "backend", "backend_addr", "sniff", "method", "host", "path", "sticky", "bytes_up", "bytes_down", "duration_ms", "cause", "error"},
		}
	}
	w := newAsyncWriter(dst, out, cfg.MaxBuffered, cfg.Log)
	return &Logger{zl: zerolog.New(w), w: w}, nil
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644) // its error names the path
}

// Enabled reports whether the log is on: the caller gathers what only the log needs (a
// copy of the request's method, host and path) only then.
func (l *Logger) Enabled() bool { return l != nil }

// Log writes e as one line. It does not block on the destination and, for JSON, does not
// allocate (but for e.Err's text).
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	ev := l.zl.Log()
	var t [40]byte // zerolog's own timestamp has whole seconds, set by a process-wide variable
	ev = ev.Bytes(zerolog.TimestampFieldName, time.Now().AppendFormat(t[:0], timeFormat))
	if e.Client.IsValid() {
		var a [64]byte // holds any "[v6%zone]:port"
		ev = ev.Bytes("client", e.Client.AppendTo(a[:0]))
	}
	str(ev, "listener", e.Listener)
	str(ev, "pool", e.Pool)
	str(ev, "backend", e.BackendID)
	str(ev, "backend_addr", e.BackendAddr)
	str(ev, "sniff", e.Sniff)
	bytesField(ev, "method", e.Method)
	bytesField(ev, "host", e.Host)
	bytesField(ev, "path", e.Path)
	str(ev, "sticky", e.Sticky)
	ev.Uint64("bytes_up", e.BytesUp).
		Uint64("bytes_down", e.BytesDown).
		Float64("duration_ms", float64(e.Duration)/float64(time.Millisecond)).
		Str("cause", e.Cause.String())
	if e.Err != nil {
		ev = ev.Str("error", e.Err.Error())
	}
	ev.Send()
}

func str(ev *zerolog.Event, key, val string) {
	if val != "" {
		ev.Str(key, val)
	}
}

func bytesField(ev *zerolog.Event, key string, val []byte) {
	if len(val) > 0 {
		ev.Bytes(key, val)
	}
}

// Reopen closes the log file and opens its path again, for logrotate: after it renames the
// file, send lb SIGUSR1 and new lines go to a new file at the old path. The lines logged
// before Reopen are written to the old file first, so none is lost and none lands on the
// wrong side. With stdout or stderr it does nothing. On error the old file stays in use.
func (l *Logger) Reopen() error {
	if l == nil {
		return nil
	}
	return l.w.reopenFile()
}

// Dropped returns how many lines were dropped because the destination could not keep up.
func (l *Logger) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return l.w.droppedLines()
}

// Close writes the buffered lines, stops the writer's goroutine and closes the file (not
// stdout or stderr). Log must not be called after Close.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	return l.w.close()
}
