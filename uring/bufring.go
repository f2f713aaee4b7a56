package uring

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BufRing is a provided-buffer ring (IORING_REGISTER_PBUF_RING): a group of equal
// buffers the kernel picks from for SQEs with SQEBufferSelect, returned by the
// application when it is done with them. Like the Ring, it belongs to one goroutine.
type BufRing struct {
	r       *Ring
	bgid    uint16
	mask    uint16
	size    int
	ring    []byte // the mapped io_uring_buf array, shared with the kernel
	entries []buf
	tail    *uint16 // io_uring_buf_ring.tail, overlaying entries[0].Resv
	local   uint16  // tail including buffers added and not yet published
	mem     []byte  // the buffers themselves, count*size
}

// RegisterBufRing registers group bgid with count buffers of size bytes each (count a
// power of two up to 32768) and hands them all to the kernel.
func (r *Ring) RegisterBufRing(bgid uint16, count int, size int) (*BufRing, error) {
	if count <= 0 || count > 1<<15 || count&(count-1) != 0 {
		return nil, fmt.Errorf("buffer ring of %d entries: want a power of two up to 32768", count)
	}
	ringBytes := count * int(unsafe.Sizeof(buf{}))
	ringBytes = (ringBytes + unix.Getpagesize() - 1) &^ (unix.Getpagesize() - 1)
	ring, err := unix.Mmap(-1, 0, ringBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap buffer ring: %w", err)
	}
	mem, err := unix.Mmap(-1, 0, count*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		_ = unix.Munmap(ring)
		return nil, fmt.Errorf("mmap buffers: %w", err)
	}
	b := &BufRing{r: r, bgid: bgid, mask: uint16(count - 1), size: size, ring: ring, mem: mem}
	b.entries = unsafe.Slice((*buf)(unsafe.Pointer(&ring[0])), count)
	b.tail = &b.entries[0].Resv
	reg := bufReg{RingAddr: uint64(uintptr(unsafe.Pointer(&ring[0]))), RingEntries: uint32(count), Bgid: bgid}
	if err := r.register(registerPbufRing, unsafe.Pointer(&reg), 1); err != nil {
		_ = unix.Munmap(ring)
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("register buffer ring %d: %w", bgid, err)
	}
	for i := range count {
		b.Add(uint16(i))
	}
	b.Publish()
	return b, nil
}

// Group is the buffer group id SQEs name.
func (b *BufRing) Group() uint16 { return b.bgid }

// Size is the size of each buffer.
func (b *BufRing) Size() int { return b.size }

// Buf is buffer bid's first n bytes, as a receive CQE reported them.
func (b *BufRing) Buf(bid uint16, n int) []byte {
	off := int(bid) * b.size
	return b.mem[off : off+n : off+b.size]
}

// Add queues buffer bid for return to the kernel; Publish makes the queued ones visible.
func (b *BufRing) Add(bid uint16) {
	e := &b.entries[b.local&b.mask]
	// Writing Addr/Len/Bid leaves Resv alone: for entry 0 that field is the shared tail.
	e.Addr = uint64(uintptr(unsafe.Pointer(&b.mem[int(bid)*b.size])))
	e.Len = uint32(b.size)
	e.Bid = bid
	b.local++
}

// Publish hands the buffers queued with Add to the kernel (one release store).
func (b *BufRing) Publish() {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(uintptr(unsafe.Pointer(b.tail))-2)), uint32(b.local)<<16|uint32(b.entries[0].Bid))
}

// Recycle returns one buffer at once.
func (b *BufRing) Recycle(bid uint16) { b.Add(bid); b.Publish() }

// Close unregisters the group and unmaps its memory; nothing may still use its buffers.
func (b *BufRing) Close() error {
	reg := bufReg{Bgid: b.bgid}
	err := b.r.register(unregisterPbufRing, unsafe.Pointer(&reg), 1)
	_ = unix.Munmap(b.ring)
	_ = unix.Munmap(b.mem)
	if err != nil {
		return fmt.Errorf("unregister buffer ring %d: %w", b.bgid, err)
	}
	return nil
}
