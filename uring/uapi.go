package uring

// The kernel ABI of io_uring. golang.org/x/sys/unix (v0.49.0) has only the system call
// numbers (SYS_IO_URING_SETUP, _ENTER, _REGISTER); the constants and struct layouts below
// are transcribed from the Linux uapi header include/uapi/linux/io_uring.h (Linux 6.x).

// Setup flags (io_uring_params.flags).
const (
	SetupCQSize       = 1 << 3  // IORING_SETUP_CQSIZE: cq_entries is given
	SetupClamp        = 1 << 4  // IORING_SETUP_CLAMP
	SetupSubmitAll    = 1 << 7  // IORING_SETUP_SUBMIT_ALL: keep submitting after a failed SQE
	SetupCoopTaskrun  = 1 << 8  // IORING_SETUP_COOP_TASKRUN
	SetupSingleIssuer = 1 << 12 // IORING_SETUP_SINGLE_ISSUER: one thread submits
	SetupDeferTaskrun = 1 << 13 // IORING_SETUP_DEFER_TASKRUN: completions run on enter(GETEVENTS)
)

// Features the kernel reports (io_uring_params.features).
const (
	FeatSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP: SQ and CQ rings share one mapping
	FeatNoDrop     = 1 << 1 // IORING_FEAT_NODROP: overflowed CQEs are kept, not dropped
	FeatFastPoll   = 1 << 5 // IORING_FEAT_FAST_POLL
	FeatExtArg     = 1 << 8 // IORING_FEAT_EXT_ARG: enter takes a timeout

)

// Opcodes (enum io_uring_op).
const (
	OpNop         = 0
	OpPollAdd     = 6
	OpPollRemove  = 7
	OpTimeout     = 11
	OpAccept      = 13
	OpAsyncCancel = 14
	OpLinkTimeout = 15
	OpConnect     = 16
	OpClose       = 19
	OpRead        = 22
	OpSend        = 26
	OpRecv        = 27
	OpShutdown    = 34
)

// SQE flags (io_uring_sqe.flags).
const (
	SQEFixedFile      = 1 << 0 // IOSQE_FIXED_FILE: fd is an index into registered files
	SQEIOLink         = 1 << 2 // IOSQE_IO_LINK
	SQEBufferSelect   = 1 << 5 // IOSQE_BUFFER_SELECT: pick a buffer from buf_group
	SQECQESkipSuccess = 1 << 6 // IOSQE_CQE_SKIP_SUCCESS
	acceptMultishot   = 1 << 0 // IORING_ACCEPT_MULTISHOT (in ioprio)
	recvMultishot     = 1 << 1 // IORING_RECV_MULTISHOT (in ioprio)
	asyncCancelAll    = 1 << 0 // IORING_ASYNC_CANCEL_ALL
	asyncCancelFD     = 1 << 1 // IORING_ASYNC_CANCEL_FD
)

// CQE flags (io_uring_cqe.flags).
const (
	CQEFBuffer       = 1 << 0 // IORING_CQE_F_BUFFER: the upper 16 bits hold the buffer id
	CQEFMore         = 1 << 1 // IORING_CQE_F_MORE: a multishot request stays armed
	CQEFSockNonempty = 1 << 2 // IORING_CQE_F_SOCK_NONEMPTY
	cqeBufferShift   = 16     // IORING_CQE_BUFFER_SHIFT
)

// io_uring_enter flags.
const (
	enterGetEvents = 1 << 0 // IORING_ENTER_GETEVENTS
	enterExtArg    = 1 << 3 // IORING_ENTER_EXT_ARG: the argument is a getEventsArg
)

// getEventsArg is struct io_uring_getevents_arg: a wait's timeout without a timeout SQE.
type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

// SQ ring flags (the word at sq_off.flags).
const (
	sqNeedWakeup = 1 << 0 // IORING_SQ_NEED_WAKEUP
	sqCQOverflow = 1 << 1 // IORING_SQ_CQ_OVERFLOW: completions wait in the kernel's overflow list
	sqTaskrun    = 1 << 2 // IORING_SQ_TASKRUN
)

// mmap offsets.
const (
	offSQRing = 0          // IORING_OFF_SQ_RING
	offCQRing = 0x8000000  // IORING_OFF_CQ_RING
	offSQEs   = 0x10000000 // IORING_OFF_SQES
)

// io_uring_register opcodes.
const (
	registerFiles       = 2  // IORING_REGISTER_FILES
	unregisterFiles     = 3  // IORING_UNREGISTER_FILES
	registerFilesUpdate = 6  // IORING_REGISTER_FILES_UPDATE
	registerPbufRing    = 22 // IORING_REGISTER_PBUF_RING
	unregisterPbufRing  = 23 // IORING_UNREGISTER_PBUF_RING
)

// sqringOffsets is struct io_sqring_offsets.
type sqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

// cqringOffsets is struct io_cqring_offsets.
type cqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// params is struct io_uring_params (120 bytes).
type params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqringOffsets
	CQOff                                                                  cqringOffsets
}

// SQE is struct io_uring_sqe (64 bytes). The unions are flattened to their first member;
// the Prep methods set the fields each opcode reads.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64 // off / addr2
	Addr        uint64 // addr / splice_off_in
	Len         uint32
	OpFlags     uint32 // rw_flags, msg_flags, accept_flags, timeout_flags, cancel_flags...
	UserData    uint64
	BufIndex    uint16 // buf_index / buf_group
	Personality uint16
	SpliceFdIn  int32 // splice_fd_in / file_index / addr_len
	Addr3       uint64
	pad2        uint64
}

// CQE is struct io_uring_cqe (16 bytes; the ring is not set up with CQE32).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// bufReg is struct io_uring_buf_reg.
type bufReg struct {
	RingAddr    uint64
	RingEntries uint32
	Bgid        uint16
	Flags       uint16
	Resv        [3]uint64
}

// buf is struct io_uring_buf, one entry of a provided-buffer ring. The ring's tail is the
// Resv field of entry 0 (struct io_uring_buf_ring overlays it).
type buf struct {
	Addr uint64
	Len  uint32
	Bid  uint16
	Resv uint16
}

// timespec is struct __kernel_timespec.
type timespec struct {
	Sec  int64
	Nsec int64
}
