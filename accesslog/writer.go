package accesslog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// output is the destination file. Only the writer's goroutine uses it, until close.
type output struct {
	file *os.File
	path string // empty for stdout and stderr: never reopened nor closed
}

func (o *output) Write(p []byte) (int, error) { return o.file.Write(p) }

func (o *output) reopen() error {
	if o.path == "" {
		return nil
	}
	f, err := openFile(o.path)
	if err != nil {
		return err
	}
	old := o.file
	o.file = f
	return old.Close()
}

func (o *output) close() error {
	if o.path == "" {
		return nil
	}
	return o.file.Close()
}

// asyncWriter takes whole lines from any goroutine into a buffer and writes them to dst from
// its own goroutine, so a caller waits at most for a memcpy under a mutex, never for I/O.
// zerolog's diode writer does the same lock-free, but copies every line into a new slice;
// here two buffers swap and, once grown, nothing is allocated.
type asyncWriter struct {
	dst io.Writer // out, or a ConsoleWriter over it: fed one line per Write
	out *output
	max int
	log zerolog.Logger

	mu      sync.Mutex
	buf     []byte // lines waiting for the writer
	dropped uint64
	closed  bool

	wake   chan struct{}   // buffered 1: the writer has lines to write
	reopen chan chan error // Reopen's requests, answered once the file is reopened
	done   chan struct{}   // closed when the writer's goroutine returns
	err    error           // of the last write, set by the writer's goroutine before done
}

func newAsyncWriter(dst io.Writer, out *output, max int, log zerolog.Logger) *asyncWriter {
	w := &asyncWriter{dst: dst, out: out, max: max, log: log, wake: make(chan struct{}, 1), reopen: make(chan chan error), done: make(chan struct{})}
	go w.run()
	return w
}

// Write takes one line. It never fails: a line that does not fit in what is left of the
// buffer is dropped and counted.
func (w *asyncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed || len(w.buf)+len(p) > w.max {
		w.dropped++
		w.mu.Unlock()
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // already woken
	}
	return len(p), nil
}

func (w *asyncWriter) droppedLines() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

// run writes the buffered lines out until close, then once more. A failing destination
// (a full disk) is reported twice: when a write first fails, and when one works again or
// the log closes, with the count of lines lost meanwhile. Only a write decides: a wake-up
// with nothing to write leaves the state as it was.
func (w *asyncWriter) run() {
	defer close(w.done)
	var spare []byte
	var reported uint64 // dropped lines already logged
	var lastReport time.Time
	var out outage
	for {
		var reopened chan error
		select {
		case <-w.wake:
		case reopened = <-w.reopen:
		}
		w.mu.Lock()
		spare, w.buf = w.buf, spare[:0]
		dropped, closed := w.dropped, w.closed
		w.mu.Unlock()

		if len(spare) > 0 {
			lost, err := w.writeLines(spare)
			out.wrote(w.log, lost, err)
			w.err = err
		}
		if closed {
			out.closing(w.log)
		}
		if dropped > reported && (time.Since(lastReport) > 10*time.Second || closed) {
			w.log.Warn().Uint64("dropped", dropped-reported).Msg("access log lines dropped: the destination is slower than connections close")
			reported, lastReport = dropped, time.Now()
		}
		if reopened != nil { // after the lines logged before Reopen went to the old file
			reopened <- w.out.reopen()
		}
		if closed {
			return
		}
	}
}

// outage is the writer's failing state: set by the first write that fails, cleared by the
// next that works, and only by a write.
type outage struct {
	failing bool
	since   time.Time
	lost    uint64 // lines lost to failed writes since
}

// wrote takes the result of one write of lines, of which lost were not written, and logs
// the outage's start and end.
func (o *outage) wrote(log zerolog.Logger, lost uint64, err error) {
	switch {
	case err != nil && !o.failing:
		log.Error().Err(err).Msg("cannot write the access log; lines are lost until it works again")
		o.failing, o.since, o.lost = true, time.Now(), lost
	case err != nil:
		o.lost += lost
	case o.failing:
		log.Info().Uint64("lost", o.lost).Dur("after", time.Since(o.since)).Msg("access log writes work again")
		*o = outage{}
	}
}

// closing reports an outage still on when the log closes.
func (o *outage) closing(log zerolog.Logger) {
	if o.failing {
		log.Error().Uint64("lost", o.lost).Dur("after", time.Since(o.since)).Msg("access log closed while its writes failed")
		*o = outage{}
	}
}

// writeLines writes b, whole lines, to dst one line at a time when dst is a ConsoleWriter
// (it reads one JSON event per Write), else at once. It returns how many lines were not
// written whole, and the first error.
func (w *asyncWriter) writeLines(b []byte) (lost uint64, err error) {
	if _, ok := w.dst.(*output); ok {
		n, err := w.dst.Write(b)
		if err != nil {
			lost = uint64(bytes.Count(b[n:], []byte{'\n'}))
		}
		return lost, err
	}
	var first error
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b) - 1
		}
		if _, err := w.dst.Write(b[:i+1]); err != nil {
			lost++
			if first == nil {
				first = err
			}
		}
		b = b[i+1:]
	}
	return lost, first
}

// reopenFile has the writer's goroutine write what is buffered, then reopen the file.
func (w *asyncWriter) reopenFile() error {
	reply := make(chan error, 1)
	select {
	case w.reopen <- reply:
		return <-reply
	case <-w.done:
		return errors.New("reopen access log: it is closed")
	}
}

func (w *asyncWriter) close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
	if err := w.out.close(); err != nil {
		return fmt.Errorf("close access log: %w", err)
	}
	return w.err
}
