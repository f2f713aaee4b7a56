package l4

import (
	"net"
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data path's system calls, made raw: on non-blocking descriptors they return at once,
// so the scheduler need not be told. A plain syscall.Syscall enters and leaves the scheduler
// and, when the runtime is quiet, wakes sysmon: measured, that cost more than the calls.

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func sysRead(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(n), errnoErr(e)
}

func sysWrite(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(n), errnoErr(e)
}

// sysSendMore is write(2) with MSG_MORE: the kernel holds back a last segment smaller than
// the MSS, even with Nagle off, until a later write, a shutdown, a close or an ACK sends it.
func sysSendMore(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MSG_MORE|unix.MSG_NOSIGNAL, 0, 0)
	return int(n), errnoErr(e)
}

// sysPeek reads what a socket holds without taking it.
func sysPeek(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MSG_PEEK, 0, 0)
	return int(n), errnoErr(e)
}

// sysDiscard takes n bytes from a TCP socket without copying them anywhere (MSG_TRUNC).
func sysDiscard(fd, n int) error {
	if n == 0 {
		return nil
	}
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), 0, uintptr(n), unix.MSG_TRUNC, 0, 0)
	return errnoErr(e)
}

// sysSplice moves up to n bytes from one descriptor to another, one of them a pipe.
func sysSplice(from, to, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(from), 0, uintptr(to), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return int(r), errnoErr(e)
}

// sysClose closes fd, which also takes it out of every epoll set.
func sysClose(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// sysResetOnClose makes the close that follows send RST, not FIN (SO_LINGER on, 0 s).
func sysResetOnClose(fd int) {
	l := unix.Linger{Onoff: 1, Linger: 0}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
}

// sysShutdownWrite sends FIN: the peer reads EOF, and can still send.
func sysShutdownWrite(fd int) { unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0) }

func sysEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

func sysSetInt(fd, level, opt, v int) {
	v32 := int32(v)
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v32)), 4, 0)
}

func sysSocketError(fd int) error {
	var v int32
	size := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return e
	}
	return errnoErr(unix.Errno(v))
}

// sockaddr is a backend address ready for connect(2), built once.
type sockaddr struct {
	family int
	raw    unix.RawSockaddrInet6 // large enough for either family
	len    uintptr
}

func newSockaddr(a netip.AddrPort) *sockaddr {
	port := [2]byte{byte(a.Port() >> 8), byte(a.Port())} // network byte order
	sa := &sockaddr{}
	if ip := a.Addr(); ip.Is4() {
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		in4.Family, in4.Port, in4.Addr = unix.AF_INET, *(*uint16)(unsafe.Pointer(&port)), ip.As4()
		sa.family, sa.len = unix.AF_INET, unix.SizeofSockaddrInet4
		return sa
	}
	sa.raw.Family, sa.raw.Port, sa.raw.Addr = unix.AF_INET6, *(*uint16)(unsafe.Pointer(&port)), a.Addr().As16()
	sa.raw.Scope_id, _ = scopeID(a.Addr().Zone())
	sa.family, sa.len = unix.AF_INET6, unix.SizeofSockaddrInet6
	return sa
}

// scopeID is the index of the interface an IPv6 zone names (fe80::1%eth0 or %2): a link-local
// address means nothing without it. 0 and true when there is no zone; false when no
// interface has that name or index.
func scopeID(zone string) (uint32, bool) {
	if zone == "" {
		return 0, true
	}
	var ifi *net.Interface
	var err error
	if n, perr := strconv.ParseUint(zone, 10, 31); perr == nil {
		ifi, err = net.InterfaceByIndex(int(n))
	} else {
		ifi, err = net.InterfaceByName(zone)
	}
	if err != nil {
		return 0, false
	}
	return uint32(ifi.Index), true
}

// sysDial opens a non-blocking socket and starts connecting it.
func sysDial(sa *sockaddr) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(sa.family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, opError("socket", e)
	}
	// No Nagle: lb forwards what arrives as it arrives. Keep-alive: a silent dead peer is
	// found even when the idle timeout is off.
	sysSetInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	sysSetInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_, _, e = unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa.raw)), sa.len)
	if e != 0 && e != unix.EINPROGRESS {
		sysClose(int(fd))
		return -1, opError("connect", e)
	}
	return int(fd), nil
}

// sysWritev writes a then b in one system call.
func sysWritev(fd int, a, b []byte) (int, error) {
	iov := [2]unix.Iovec{{Base: unsafe.SliceData(a)}, {Base: unsafe.SliceData(b)}}
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), 2)
	return int(n), errnoErr(e)
}

// localAddr is the address a socket's peer connected to, read without allocating.
func localAddr(fd int) netip.AddrPort {
	var sa unix.RawSockaddrAny
	size := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)))
	if e != 0 {
		return netip.AddrPort{}
	}
	return addrPort(&sa)
}
