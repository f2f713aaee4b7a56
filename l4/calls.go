//go:build linux

package l4

import (
	"sync"

	"golang.org/x/sys/unix"
)

// callQueue is how other goroutines reach a loop: a call is queued under a lock and the loop
// is woken through an eventfd its engine watches. It is the only state of a loop that other
// goroutines touch.
type callQueue struct {
	wakefd int

	mu     sync.Mutex // guards calls and closed
	calls  []func()
	closed bool // wakefd is closed: post does nothing
}

func newCallQueue() (*callQueue, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, opError("eventfd", err)
	}
	return &callQueue{wakefd: fd}, nil
}

// post queues fn to run on the loop's goroutine and returns at once.
// Once the queue is closed it does nothing: its eventfd's number may belong to another
// file by then.
func (q *callQueue) post(fn func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.calls = append(q.calls, fn)
	one := [8]byte{1}
	unix.Write(q.wakefd, one[:]) // non-blocking
}

// run runs the queued calls, on the loop's goroutine; the engine has read the eventfd.
func (q *callQueue) run() {
	q.mu.Lock()
	calls := q.calls
	q.calls = nil
	q.mu.Unlock()
	for _, fn := range calls {
		fn()
	}
}

func (q *callQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	unix.Close(q.wakefd)
}
