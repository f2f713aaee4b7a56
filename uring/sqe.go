package uring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Prep methods fill an SQE from GetSQE for one opcode. The caller then sets UserData
// (and Flags, e.g. SQEIOLink) before submitting.

func ptr[T any](p *T) uint64 { return uint64(uintptr(unsafe.Pointer(p))) }

func bytesAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// PrepNop is a no-op that completes with 0.
func (s *SQE) PrepNop() { s.Opcode = OpNop; s.Fd = -1 }

// PrepAccept accepts one connection on fd; each CQE's Res is the new descriptor.
func (s *SQE) PrepAccept(fd int, flags int) {
	s.Opcode, s.Fd, s.OpFlags = OpAccept, int32(fd), uint32(flags)
}

// PrepMultishotAccept keeps accepting on fd until cancelled or an error: one CQE per
// connection, each with CQEFMore while the request stays armed.
func (s *SQE) PrepMultishotAccept(fd int, flags int) {
	s.PrepAccept(fd, flags)
	s.Ioprio |= acceptMultishot
}

// PrepRecv receives into b.
func (s *SQE) PrepRecv(fd int, b []byte, msgFlags int) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.OpFlags = OpRecv, int32(fd), bytesAddr(b), uint32(len(b)), uint32(msgFlags)
}

// PrepMultishotRecv receives on fd into buffers the kernel picks from the provided-buffer
// group bgid, one CQE per arrival (CQE.BufferID names the buffer), until EOF (Res 0),
// an error, or the group runs dry (-ENOBUFS); a CQE without CQEFMore ends it. A
// connection with no bytes arriving holds no buffer.
func (s *SQE) PrepMultishotRecv(fd int, bgid uint16) {
	s.Opcode, s.Fd = OpRecv, int32(fd)
	s.Ioprio |= recvMultishot
	s.Flags |= SQEBufferSelect
	s.BufIndex = bgid
}

// PrepRecvSelect receives once on fd into a buffer the kernel picks from group bgid when
// bytes arrive: a request waiting on a silent socket holds no buffer.
func (s *SQE) PrepRecvSelect(fd int, bgid uint16) {
	s.Opcode, s.Fd = OpRecv, int32(fd)
	s.Flags |= SQEBufferSelect
	s.BufIndex = bgid
}

// PrepRead reads into b from fd's current position (an eventfd, a pipe).
func (s *SQE) PrepRead(fd int, b []byte) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.Off = OpRead, int32(fd), bytesAddr(b), uint32(len(b)), ^uint64(0)
}

// PrepPollAdd completes once fd is ready for one of the poll events in mask (EPOLLIN,
// EPOLLOUT...; the kernel always adds EPOLLERR, EPOLLHUP and EPOLLRDHUP); Res is the
// events that were ready.
func (s *SQE) PrepPollAdd(fd int, mask uint32) {
	s.Opcode, s.Fd, s.OpFlags = OpPollAdd, int32(fd), mask
}

// PrepPollRemove cancels the poll request whose UserData is target.
func (s *SQE) PrepPollRemove(target uint64) {
	s.Opcode, s.Fd, s.Addr = OpPollRemove, -1, target
}

// PrepSend sends b on fd. Res may be short of len(b) when the socket buffer fills; the
// caller sends the rest.
func (s *SQE) PrepSend(fd int, b []byte, msgFlags int) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.OpFlags = OpSend, int32(fd), bytesAddr(b), uint32(len(b)), uint32(msgFlags)
}

// PrepConnect connects fd to an IPv4 address; sa stays alive until the CQE.
func (s *SQE) PrepConnect(fd int, sa *unix.RawSockaddrInet4) {
	s.Opcode, s.Fd, s.Addr, s.Off = OpConnect, int32(fd), ptr(sa), uint64(unsafe.Sizeof(*sa))
}

// PrepClose closes fd.
func (s *SQE) PrepClose(fd int) { s.Opcode, s.Fd = OpClose, int32(fd) }

// PrepShutdown shuts fd down (how is unix.SHUT_*).
func (s *SQE) PrepShutdown(fd int, how int) {
	s.Opcode, s.Fd, s.Len = OpShutdown, int32(fd), uint32(how)
}

// PrepCancel cancels the request whose UserData is target; the cancelled request
// completes with -ECANCELED, this one with 0 or -ENOENT / -EALREADY.
func (s *SQE) PrepCancel(target uint64) {
	s.Opcode, s.Fd, s.Addr = OpAsyncCancel, -1, target
}

// PrepCancelFD cancels every request on fd.
func (s *SQE) PrepCancelFD(fd int) {
	s.Opcode, s.Fd, s.OpFlags = OpAsyncCancel, int32(fd), asyncCancelFD|asyncCancelAll
}

// Timespec is a relative time for timeouts; it stays alive until the CQE.
type Timespec = timespec

// NewTimespec converts nanoseconds.
func NewTimespec(ns int64) Timespec { return Timespec{Sec: ns / 1e9, Nsec: ns % 1e9} }

// PrepTimeout completes with -ETIME after ts (or 0 once count other completions
// arrived, when count > 0).
func (s *SQE) PrepTimeout(ts *Timespec, count uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.Off = OpTimeout, -1, ptr(ts), 1, count
}

// PrepLinkTimeout bounds the previous SQE, which must carry SQEIOLink: if ts passes
// first, that request completes with -ECANCELED and this one with -ETIME.
func (s *SQE) PrepLinkTimeout(ts *Timespec) {
	s.Opcode, s.Fd, s.Addr, s.Len = OpLinkTimeout, -1, ptr(ts), 1
}
