//go:build linux

// Command noiouring runs a command with io_uring refused, as Docker's default seccomp
// profile refuses it: io_uring_setup fails with EPERM, every other system call goes through.
// The tests of lb's --engine run lb under it.
//
//	noiouring COMMAND [ARG...]
//
// It sets no_new_privs (which lets an unprivileged process install a filter), installs the
// filter on its one locked thread and execs COMMAND from that thread: the new program and
// its threads inherit the filter and cannot remove it.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// auditArch is the seccomp_data.arch of this build's system calls: a call made under
// another ABI numbers its calls differently, and is let through.
var auditArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}

// Offsets in struct seccomp_data: int nr, then __u32 arch.
const (
	offNr   = 0
	offArch = 4
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: noiouring COMMAND [ARG...]")
		os.Exit(2)
	}
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		fail(err)
	}
	arch, ok := auditArch[runtime.GOARCH]
	if !ok {
		fail(fmt.Errorf("no seccomp audit arch known for %s", runtime.GOARCH))
	}
	// The filter and no_new_privs belong to the thread that sets them; exec from the same one.
	runtime.LockOSThread()
	if err := refuseIOUring(arch); err != nil {
		fail(err)
	}
	fail(syscall.Exec(path, os.Args[1:], os.Environ()))
}

// refuseIOUring installs a classic BPF seccomp filter on this thread: io_uring_setup of
// this arch returns EPERM; everything else is allowed.
func refuseIOUring(arch uint32) error {
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offArch},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: arch, Jt: 0, Jf: 3}, // another ABI: allow
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offNr},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_IO_URING_SETUP, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)&unix.SECCOMP_RET_DATA},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	}
	runtime.KeepAlive(filter)
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "noiouring:", err)
	os.Exit(1)
}
