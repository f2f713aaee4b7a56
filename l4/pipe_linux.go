package l4

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// pipe is a kernel pipe used as splice's buffer between two sockets. size is its capacity:
// 64 KiB, unless Linux cut it for a user over fs.pipe-user-pages-soft (to 8 KiB).
type pipe struct{ r, w, size int }

// pipe2 creates a non-blocking pipe; a test replaces it to hand out small ones.
var pipe2 = func(fds []int) error { return unix.Pipe2(fds, unix.O_NONBLOCK|unix.O_CLOEXEC) }

// pipePool keeps emptied pipes for reuse: creating one is two descriptors and a syscall.
// Only pipes known to be empty go back into it.
type pipePool struct {
	mu       sync.Mutex
	free     []*pipe
	low      int   // the fewest free since the last trim: pipes nobody needed
	lastTrim int64 // unix nanos
	inUse    atomic.Int64
	maxFree  int // what the pool keeps after a burst of stalled flows: sparePipes
}

// maxFreePipes bounds what the pool keeps after a burst of stalled flows, under a large
// open-files limit.
const maxFreePipes = 64

// sparePipes is how many emptied pipes the pool keeps under an open-files limit: one per
// 1,024 descriptors, at most maxFreePipes, so that spares never cost a small limit clients.
func sparePipes(nofile uint64) int { return int(min(maxFreePipes, nofile/1024)) }

func (pp *pipePool) get() (*pipe, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.low = min(pp.low, n-1)
		pp.mu.Unlock()
		pp.inUse.Add(1)
		return p, nil
	}
	pp.mu.Unlock()
	var fds [2]int
	if err := pipe2(fds[:]); err != nil {
		return nil, opError("pipe2", err)
	}
	size, err := unix.FcntlInt(uintptr(fds[1]), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, opError("fcntl", err)
	}
	pp.inUse.Add(1)
	return &pipe{r: fds[0], w: fds[1], size: size}, nil
}

func (pp *pipePool) put(p *pipe) {
	pp.mu.Lock()
	if len(pp.free) < pp.maxFree {
		pp.free = append(pp.free, p)
		pp.mu.Unlock()
		pp.inUse.Add(-1)
		return
	}
	pp.mu.Unlock()
	pp.discard(p)
}

// trim closes the spare pipes nobody took in the second before, so descriptors follow the
// load down. Every loop calls it; it acts once a second.
func (pp *pipePool) trim(now int64) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if now-pp.lastTrim < trimEvery {
		return
	}
	pp.lastTrim = now
	for _, p := range pp.free[:pp.low] {
		unix.Close(p.r)
		unix.Close(p.w)
	}
	pp.free = append(pp.free[:0], pp.free[pp.low:]...)
	pp.low = len(pp.free)
}

// discard closes p, for pipes that may still hold bytes.
func (pp *pipePool) discard(p *pipe) {
	unix.Close(p.r)
	unix.Close(p.w)
	pp.inUse.Add(-1)
}

func (pp *pipePool) drain() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for _, p := range pp.free {
		unix.Close(p.r)
		unix.Close(p.w)
	}
	pp.free, pp.low = nil, 0
}

// loopPipes is a loop's side of the pool: its hot pipe, ready for the next flow that needs
// one. A flow that leaves bytes in it claims it; the loop takes another when it needs one.
type loopPipes struct {
	pool *pipePool
	hot  *pipe
}

// ready returns the hot pipe, taken from the pool if the loop has none.
func (lp *loopPipes) ready() (*pipe, error) {
	if lp.hot == nil {
		p, err := lp.pool.get()
		if err != nil {
			return nil, err
		}
		lp.hot = p
	}
	return lp.hot, nil
}

// claim hands the hot pipe to the flow that just put bytes in it.
func (lp *loopPipes) claim() { lp.hot = nil }

// release takes back the emptied pipe of a flow: it becomes the loop's hot pipe, or goes
// back to the pool if the loop already has one.
func (lp *loopPipes) release(en *end) {
	if lp.hot == nil {
		lp.hot = en.pipe
	} else {
		lp.pool.put(en.pipe)
	}
	en.pipe = nil
}

// close gives the hot pipe back for good, when the loop ends.
func (lp *loopPipes) close() {
	if lp.hot != nil {
		lp.pool.discard(lp.hot)
		lp.hot = nil
	}
}
