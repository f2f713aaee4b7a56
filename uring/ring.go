// Package uring drives a Linux io_uring instance with golang.org/x/sys/unix and no cgo:
// the submission and completion rings mapped into the process, SQEs handed out and
// flushed, CQEs reaped, submit-and-wait in one io_uring_enter, and provided-buffer rings
// (IORING_REGISTER_PBUF_RING) for multishot receives.
//
// A Ring is owned by one goroutine; nothing in it is safe for concurrent use. With
// SetupSingleIssuer (and SetupDeferTaskrun, which needs it) that goroutine must also be
// locked to its OS thread (runtime.LockOSThread) before New, since the kernel ties the
// ring to the creating thread.
//
// Memory named by an SQE (a buffer to send or receive into) belongs to the kernel until
// the operation's CQE is reaped: the caller keeps it alive and unchanged, and it must not
// be on a goroutine stack, which the runtime moves when it grows: use heap objects that
// escape (or mmap'd memory, as BufRing does). A sockaddr or timespec is copied by the
// kernel when the SQE is submitted, so it must stay put only until then.
//
// The bookkeeping follows the protocol of the kernel's uapi header and liburing: the
// application writes SQEs and publishes the SQ tail with a release store; the kernel
// consumes up to that tail and advances the SQ head; the kernel publishes CQEs and the CQ
// tail; the application reads CQEs up to the tail and releases them by storing the CQ
// head. Indexes are free-running uint32 counters masked by entries-1, so wrap-around is
// the ordinary case.
package uring

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrUnavailable wraps the error of io_uring_setup when the kernel or its policy refuses
// io_uring (ENOSYS, EPERM from io_uring_disabled or seccomp, EACCES).
var ErrUnavailable = errors.New("io_uring unavailable")

// Options shape a new ring.
type Options struct {
	// Entries is the SQ size, rounded up by the kernel to a power of two.
	Entries uint32
	// CQEntries, when non-zero, sizes the CQ (default twice Entries).
	CQEntries uint32
	// Flags are Setup* flags.
	Flags uint32
}

// Ring is one io_uring instance with its rings mapped.
type Ring struct {
	fd       int
	flags    uint32
	features uint32

	sqMem, cqMem, sqeMem []byte

	sqHead, sqTail, sqFlags, sqDropped *uint32
	sqMask, sqEntries                  uint32
	sqes                               []SQE
	// sqeTail is the next SQE to hand out; sqeHead the first not yet published to the
	// kernel. Both free-run.
	sqeHead, sqeTail uint32

	cqHead, cqTail, cqOverflow *uint32
	cqMask, cqEntries          uint32
	cqes                       []CQE

	// The argument of a bounded wait, kept off the stack.
	wait    getEventsArg
	timeout timespec
}

// New sets up a ring and maps its SQ ring, CQ ring and SQE array.
func New(o Options) (*Ring, error) {
	p := params{Flags: o.Flags}
	if o.CQEntries != 0 {
		p.Flags |= SetupCQSize
		p.CQEntries = o.CQEntries
	}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(o.Entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		switch errno {
		case unix.ENOSYS, unix.EPERM, unix.EACCES:
			return nil, fmt.Errorf("io_uring_setup: %w: %w", ErrUnavailable, errno)
		}
		return nil, fmt.Errorf("io_uring_setup(%d, flags %#x): %w", o.Entries, p.Flags, errno)
	}
	r := &Ring{fd: int(fd), flags: p.Flags, features: p.Features}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) mmap(p *params) error {
	sqSize := int(p.SQOff.Array) + int(p.SQEntries)*4
	cqSize := int(p.CQOff.CQEs) + int(p.CQEntries)*int(unsafe.Sizeof(CQE{}))
	single := p.Features&FeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap SQ ring: %w", err)
	}
	if single {
		r.cqMem = r.sqMem
	} else if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap CQ ring: %w", err)
	}
	sqeSize := int(p.SQEntries) * int(unsafe.Sizeof(SQE{}))
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap SQEs: %w", err)
	}
	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead = u32(r.sqMem, p.SQOff.Head)
	r.sqTail = u32(r.sqMem, p.SQOff.Tail)
	r.sqFlags = u32(r.sqMem, p.SQOff.Flags)
	r.sqDropped = u32(r.sqMem, p.SQOff.Dropped)
	r.sqMask = *u32(r.sqMem, p.SQOff.RingMask)
	r.sqEntries = *u32(r.sqMem, p.SQOff.RingEntries)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMem[0])), r.sqEntries)
	// The SQ array maps ring slots to SQE indexes; an identity map set once lets slot i
	// always name SQE i (what liburing does too).
	array := unsafe.Slice(u32(r.sqMem, p.SQOff.Array), r.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.cqHead = u32(r.cqMem, p.CQOff.Head)
	r.cqTail = u32(r.cqMem, p.CQOff.Tail)
	r.cqOverflow = u32(r.cqMem, p.CQOff.Overflow)
	r.cqMask = *u32(r.cqMem, p.CQOff.RingMask)
	r.cqEntries = *u32(r.cqMem, p.CQOff.RingEntries)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&r.cqMem[p.CQOff.CQEs])), r.cqEntries)
	return nil
}

// Close unmaps the rings and closes the ring's descriptor; the kernel cancels what is in
// flight.
func (r *Ring) Close() error {
	if r.cqMem != nil && r.features&FeatSingleMmap == 0 {
		_ = unix.Munmap(r.cqMem)
	}
	for _, m := range [][]byte{r.sqeMem, r.sqMem} {
		if m != nil {
			_ = unix.Munmap(m)
		}
	}
	r.sqeMem, r.cqMem, r.sqMem = nil, nil, nil
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// Fd is the ring's descriptor.
func (r *Ring) Fd() int { return r.fd }

// SQEntries and CQEntries are the ring sizes the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sqEntries }

// CQEntries is the size of the completion queue.
func (r *Ring) CQEntries() uint32 { return r.cqEntries }

// Features are the IORING_FEAT_* bits the kernel reported.
func (r *Ring) Features() uint32 { return r.features }

// GetSQE hands out the next free SQE, zeroed, or nil when the SQ is full: the caller
// then Submits and asks again.
func (r *Ring) GetSQE() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.sqeTail-head >= r.sqEntries {
		return nil
	}
	s := &r.sqes[r.sqeTail&r.sqMask]
	*s = SQE{}
	r.sqeTail++
	return s
}

// SQReady is how many SQEs are handed out and not yet consumed by the kernel.
func (r *Ring) SQReady() uint32 { return r.sqeTail - atomic.LoadUint32(r.sqHead) }

// flush publishes the handed-out SQEs to the kernel and says how many await submission.
func (r *Ring) flush() uint32 {
	if r.sqeHead != r.sqeTail {
		r.sqeHead = r.sqeTail
		atomic.StoreUint32(r.sqTail, r.sqeTail)
	}
	return r.sqeTail - atomic.LoadUint32(r.sqHead)
}

// Submit hands the published SQEs to the kernel without waiting. It returns how many the
// kernel consumed.
func (r *Ring) Submit() (int, error) { return r.SubmitAndWait(0) }

// SubmitAndWait submits pending SQEs and waits for at least wait completions, in one
// io_uring_enter. With wait 0 it still enters when the kernel holds overflowed
// completions or deferred task work, so they reach the CQ.
func (r *Ring) SubmitAndWait(wait uint32) (int, error) {
	n := r.flush()
	var flags uint32
	if wait > 0 || r.needsFlush() {
		flags |= enterGetEvents
	}
	if n == 0 && flags == 0 {
		return 0, nil
	}
	for {
		got, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), uintptr(flags), 0, 0)
		switch errno {
		case 0:
			return int(got), nil
		case unix.EINTR:
			continue
		}
		return int(got), fmt.Errorf("io_uring_enter: %w", errno)
	}
}

// needsFlush reports whether completions are held in the kernel (CQ overflow, or task
// work with DEFER_TASKRUN / COOP_TASKRUN) and only an enter with GETEVENTS brings them.
func (r *Ring) needsFlush() bool {
	f := atomic.LoadUint32(r.sqFlags)
	if f&(sqCQOverflow|sqTaskrun) != 0 {
		return true
	}
	return r.flags&SetupDeferTaskrun != 0
}

// CQOverflowPending reports the kernel's IORING_SQ_CQ_OVERFLOW: completions that did not
// fit in the CQ wait in the kernel until an enter with GETEVENTS (any Submit) flushes them.
func (r *Ring) CQOverflowPending() bool {
	return atomic.LoadUint32(r.sqFlags)&sqCQOverflow != 0
}

// CQOverflowed is the kernel's count of completions it had to drop (only without
// FeatNoDrop, or when even the overflow list could not be allocated).
func (r *Ring) CQOverflowed() uint32 { return atomic.LoadUint32(r.cqOverflow) }

// PeekCQEs copies up to len(dst) ready completions into dst and releases their slots to
// the kernel. It returns how many it copied; it never enters the kernel.
func (r *Ring) PeekCQEs(dst []CQE) int {
	head := *r.cqHead // only this side writes the head
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for head != tail && n < len(dst) {
		dst[n] = r.cqes[head&r.cqMask]
		head++
		n++
	}
	if n > 0 {
		atomic.StoreUint32(r.cqHead, head)
	}
	return n
}

// CQReady is how many completions wait in the CQ.
func (r *Ring) CQReady() uint32 { return atomic.LoadUint32(r.cqTail) - *r.cqHead }

// WaitCQEs submits what is pending, waits for at least wait completions (one
// io_uring_enter), then copies the ready ones into dst. A wait is skipped when
// completions are already in the CQ.
func (r *Ring) WaitCQEs(dst []CQE, wait uint32) (int, error) {
	if r.CQReady() >= wait {
		wait = 0
	}
	if _, err := r.SubmitAndWait(wait); err != nil && !errors.Is(err, unix.ETIME) {
		return 0, err
	}
	return r.PeekCQEs(dst), nil
}

// WaitCQEsFor is WaitCQEs with a bound: it returns with no completion once timeout
// (nanoseconds, > 0) has passed. It needs FeatExtArg (Linux 5.11).
func (r *Ring) WaitCQEsFor(dst []CQE, wait uint32, timeout int64) (int, error) {
	return r.waitFor(dst, wait, timeout, unix.Syscall6)
}

// WaitCQEsBriefly is WaitCQEsFor without telling the Go scheduler: the goroutine keeps its
// P while it waits, so a wake-up costs no hand-off between threads. A signal (the runtime's
// preemption) ends the wait early. For short timeouts only: the P does nothing else
// meanwhile.
func (r *Ring) WaitCQEsBriefly(dst []CQE, wait uint32, timeout int64) (int, error) {
	return r.waitFor(dst, wait, timeout, unix.RawSyscall6)
}

func (r *Ring) waitFor(dst []CQE, wait uint32, timeout int64, syscall6 func(trap, a1, a2, a3, a4, a5, a6 uintptr) (uintptr, uintptr, unix.Errno)) (int, error) {
	if r.CQReady() >= wait {
		return r.WaitCQEs(dst, 0)
	}
	n := r.flush()
	r.wait.ts = uint64(uintptr(unsafe.Pointer(&r.timeout)))
	r.timeout = NewTimespec(timeout)
	_, _, errno := syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait),
		enterGetEvents|enterExtArg, uintptr(unsafe.Pointer(&r.wait)), unsafe.Sizeof(r.wait))
	switch errno {
	case 0, unix.ETIME, unix.EINTR: // a cut-short wait is one the caller's loop comes back to
		return r.PeekCQEs(dst), nil
	}
	return 0, fmt.Errorf("io_uring_enter: %w", errno)
}

// Err turns a CQE's result into an error: nil for res >= 0, the errno otherwise.
func (c *CQE) Err() error {
	if c.Res >= 0 {
		return nil
	}
	return syscall.Errno(-c.Res)
}

// More reports whether a multishot request is still armed after this completion.
func (c *CQE) More() bool { return c.Flags&CQEFMore != 0 }

// BufferID is the provided buffer the kernel chose, and whether it chose one.
func (c *CQE) BufferID() (uint16, bool) {
	return uint16(c.Flags >> cqeBufferShift), c.Flags&CQEFBuffer != 0
}

func (r *Ring) register(op uint32, arg unsafe.Pointer, n uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), uintptr(op), uintptr(arg), uintptr(n), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// RegisterFiles registers a table of descriptors; SQEs with SQEFixedFile then name a
// slot instead of an fd, which spares the kernel a file lookup per operation. -1 marks
// an empty slot.
func (r *Ring) RegisterFiles(fds []int32) error {
	if err := r.register(registerFiles, unsafe.Pointer(&fds[0]), uint32(len(fds))); err != nil {
		return fmt.Errorf("register %d files: %w", len(fds), err)
	}
	return nil
}

// UpdateFiles puts fds into the registered table from slot off on.
func (r *Ring) UpdateFiles(off uint32, fds []int32) error {
	upd := struct {
		Offset uint32
		Resv   uint32
		Fds    uint64
	}{off, 0, uint64(uintptr(unsafe.Pointer(&fds[0])))}
	if err := r.register(registerFilesUpdate, unsafe.Pointer(&upd), uint32(len(fds))); err != nil {
		return fmt.Errorf("update files at %d: %w", off, err)
	}
	runtime.KeepAlive(fds)
	return nil
}
