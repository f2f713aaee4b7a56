// Command uringproto is the kill-rule prototype of issue 24 point 5: the minimal
// keep-alive path of lb (accept, receive, connect, send both ways) on one io_uring ring
// driven by one goroutine locked to its thread, to be measured against lb's epoll engine
// and HAProxy before an io_uring engine is built in full.
//
//	uringproto -listen 127.0.0.1:19500 -backends 127.0.0.1:19001,127.0.0.1:19002
//
// It is a pure TCP relay: a multishot accept on the listener; per client a backend
// socket connected round robin; then a multishot receive on each side from one
// provided-buffer ring (an idle connection holds no buffer), each received buffer sent to
// the other side (short sends resumed, one send in flight per direction so order holds)
// and recycled when sent. New SQEs are submitted together with the wait for the next
// completions, in one io_uring_enter per loop turn.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"lb/uring"
)

const (
	opAccept = iota + 1
	opConnect
	opRecv
	opSend
)

const (
	client  = 0
	backend = 1
)

func userData(op, side int, idx int) uint64 {
	return uint64(op)<<56 | uint64(side)<<48 | uint64(uint32(idx))
}

func decode(ud uint64) (op, side, idx int) {
	return int(ud >> 56), int(ud>>48) & 0xff, int(uint32(ud))
}

// chunk is a received buffer waiting to be sent to the other side.
type chunk struct {
	bid uint16
	n   int
}

// side is one connection of a pair and the bytes received on it, bound for the other.
type side struct {
	fd      int
	q       []chunk // received, not yet fully sent; q[0] is in flight when sending
	off     int     // bytes of q[0] already sent
	sending bool
	armed   bool // a multishot recv is armed
	eof     bool // the peer on this side finished sending
}

type pair struct {
	sides   [2]side
	refs    int // operations in flight
	closing bool
	used    bool
}

type proxy struct {
	r        *uring.Ring
	br       *uring.BufRing
	ln       int
	backends []unix.RawSockaddrInet4
	next     int
	pairs    []pair
	free     []int
	starved  [][2]int // pair and side whose recv ended with -ENOBUFS, rearmed after recycling
	recycled bool
	maxPairs int // with registered files: the table holds this many pairs; 0 without
}

// target fills an SQE's descriptor for side sd of pair idx: its registered slot when
// files are registered, its fd otherwise.
func (p *proxy) target(s *uring.SQE, idx, sd int) {
	if p.maxPairs > 0 {
		s.Fd = int32(2*idx + sd)
		s.Flags |= uring.SQEFixedFile
		return
	}
	s.Fd = int32(p.pairs[idx].sides[sd].fd)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:19500", "address to accept on")
	backends := flag.String("backends", "127.0.0.1:19001,127.0.0.1:19002", "comma-separated backend addresses (IPv4)")
	bufs := flag.Int("bufs", 1024, "provided buffers (a power of two)")
	bufSize := flag.Int("bufsize", 16<<10, "bytes per provided buffer")
	plain := flag.Bool("plain", false, "no SINGLE_ISSUER / DEFER_TASKRUN")
	fixed := flag.Bool("fixed", false, "registered files: a pair's two sockets in slots 2i and 2i+1")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here until SIGINT/SIGTERM")
	flag.Parse()
	if err := run(*listen, *backends, *bufs, *bufSize, *plain, *fixed, *cpuprofile); err != nil {
		log.Fatal(err)
	}
}

func sockaddr(s string) (unix.RawSockaddrInet4, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() {
		return unix.RawSockaddrInet4{}, fmt.Errorf("address %q: want IPv4 host:port", s)
	}
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
	sa.Port = ap.Port()>>8 | ap.Port()<<8 // network byte order
	return sa, nil
}

func run(listen, backends string, bufs, bufSize int, plain, fixed bool, cpuprofile string) error {
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		go func() { // owned by the process: it ends it
			<-sig
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(0)
		}()
	}
	runtime.LockOSThread()
	p := &proxy{}
	for _, b := range strings.Split(backends, ",") {
		sa, err := sockaddr(b)
		if err != nil {
			return err
		}
		p.backends = append(p.backends, sa)
	}
	lsa, err := sockaddr(listen)
	if err != nil {
		return err
	}
	p.ln, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_ = unix.SetsockoptInt(p.ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	port := int(lsa.Port>>8 | lsa.Port<<8)
	if err := unix.Bind(p.ln, &unix.SockaddrInet4{Addr: lsa.Addr, Port: port}); err != nil {
		return fmt.Errorf("bind %s: %w", listen, err)
	}
	if err := unix.Listen(p.ln, 4096); err != nil {
		return err
	}
	flags := uint32(uring.SetupSingleIssuer | uring.SetupDeferTaskrun | uring.SetupSubmitAll)
	if plain {
		flags = 0
	}
	p.r, err = uring.New(uring.Options{Entries: 1024, CQEntries: 8192, Flags: flags})
	if err != nil {
		return err
	}
	p.br, err = p.r.RegisterBufRing(0, bufs, bufSize)
	if err != nil {
		return err
	}
	if fixed {
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return err
		}
		slots := make([]int32, min(lim.Cur, 1<<16)&^1)
		for i := range slots {
			slots[i] = -1
		}
		if err := p.r.RegisterFiles(slots); err != nil {
			return err
		}
		p.maxPairs = len(slots) / 2
	}
	p.armAccept()
	cqes := make([]uring.CQE, 512)
	for {
		n, err := p.r.WaitCQEs(cqes, 1)
		if err != nil {
			return err
		}
		for i := range cqes[:n] {
			p.handle(&cqes[i])
		}
		if p.recycled {
			p.br.Publish()
			p.recycled = false
			for _, st := range p.starved {
				p.armRecv(st[0], st[1])
			}
			p.starved = p.starved[:0]
		}
	}
}

// sqe hands out an SQE, flushing the SQ to the kernel first when it is full.
func (p *proxy) sqe() *uring.SQE {
	for {
		if s := p.r.GetSQE(); s != nil {
			return s
		}
		if _, err := p.r.Submit(); err != nil && !errors.Is(err, unix.EBUSY) {
			log.Fatalf("submit: %v", err)
		}
	}
}

func (p *proxy) armAccept() {
	s := p.sqe()
	s.PrepMultishotAccept(p.ln, unix.SOCK_CLOEXEC)
	s.UserData = userData(opAccept, 0, 0)
}

func (p *proxy) armRecv(idx, sd int) {
	pr := &p.pairs[idx]
	if pr.closing || pr.sides[sd].armed {
		return
	}
	s := p.sqe()
	s.PrepMultishotRecv(pr.sides[sd].fd, p.br.Group())
	p.target(s, idx, sd)
	s.UserData = userData(opRecv, sd, idx)
	pr.sides[sd].armed = true
	pr.refs++
}

func (p *proxy) handle(c *uring.CQE) {
	op, sd, idx := decode(c.UserData)
	switch op {
	case opAccept:
		if !c.More() {
			p.armAccept()
		}
		if c.Res < 0 {
			return
		}
		p.open(int(c.Res))
	case opConnect:
		pr := &p.pairs[idx]
		pr.refs--
		if c.Res < 0 || pr.closing {
			p.close(idx)
			return
		}
		p.armRecv(idx, client)
		p.armRecv(idx, backend)
	case opRecv:
		p.received(c, idx, sd)
	case opSend:
		p.sent(c, idx, sd)
	}
	if op != opAccept && p.pairs[idx].closing {
		p.close(idx) // frees the pair once nothing is in flight
	}
}

func (p *proxy) open(cfd int) {
	bfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(cfd)
		return
	}
	_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(bfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	var idx int
	if n := len(p.free); n > 0 {
		idx, p.free = p.free[n-1], p.free[:n-1]
	} else {
		p.pairs = append(p.pairs, pair{})
		idx = len(p.pairs) - 1
	}
	if p.maxPairs > 0 {
		if idx >= p.maxPairs || p.r.UpdateFiles(uint32(2*idx), []int32{int32(cfd), int32(bfd)}) != nil {
			unix.Close(cfd)
			unix.Close(bfd)
			p.free = append(p.free, idx)
			return
		}
	}
	pr := &p.pairs[idx]
	q0, q1 := pr.sides[0].q[:0], pr.sides[1].q[:0]
	*pr = pair{used: true}
	pr.sides[client] = side{fd: cfd, q: q0}
	pr.sides[backend] = side{fd: bfd, q: q1}
	s := p.sqe()
	s.PrepConnect(bfd, &p.backends[p.next])
	p.target(s, idx, backend)
	p.next = (p.next + 1) % len(p.backends)
	s.UserData = userData(opConnect, backend, idx)
	pr.refs++
}

func (p *proxy) received(c *uring.CQE, idx, sd int) {
	pr := &p.pairs[idx]
	if !c.More() {
		pr.sides[sd].armed = false
		pr.refs--
	}
	switch {
	case c.Res > 0:
		bid, _ := c.BufferID()
		if pr.closing {
			p.recycle(bid)
		} else {
			s := &pr.sides[sd]
			s.q = append(s.q, chunk{bid, int(c.Res)})
			if !s.sending {
				p.send(idx, sd)
			}
		}
		if !c.More() {
			p.armRecv(idx, sd)
		}
	case errors.Is(c.Err(), unix.ENOBUFS) && !pr.closing:
		p.starved = append(p.starved, [2]int{idx, sd}) // rearmed once buffers come back
	case c.Res == 0 && !pr.closing: // EOF: pass it on once what came before is sent
		pr.sides[sd].eof = true
		p.halfClose(idx, sd)
	default: // error: end the pair
		p.close(idx)
	}
}

// halfClose passes side sd's EOF to the other side once sd's queue is sent, and ends the
// pair when both sides are done.
func (p *proxy) halfClose(idx, sd int) {
	pr := &p.pairs[idx]
	s := &pr.sides[sd]
	if !s.eof || len(s.q) > 0 {
		return
	}
	_ = unix.Shutdown(pr.sides[1-sd].fd, unix.SHUT_WR)
	if o := &pr.sides[1-sd]; o.eof && len(o.q) == 0 {
		p.close(idx)
	}
}

// send puts q[0] of side sd (bytes received on sd) on the other side's socket.
func (p *proxy) send(idx, sd int) {
	pr := &p.pairs[idx]
	s := &pr.sides[sd]
	ch := s.q[0]
	b := p.br.Buf(ch.bid, ch.n)[s.off:]
	e := p.sqe()
	e.PrepSend(pr.sides[1-sd].fd, b, unix.MSG_NOSIGNAL)
	p.target(e, idx, 1-sd)
	e.UserData = userData(opSend, sd, idx)
	s.sending = true
	pr.refs++
}

func (p *proxy) sent(c *uring.CQE, idx, sd int) {
	pr := &p.pairs[idx]
	pr.refs--
	s := &pr.sides[sd]
	s.sending = false
	if c.Res < 0 || pr.closing {
		p.close(idx)
		return
	}
	s.off += int(c.Res)
	if s.off < s.q[0].n {
		p.send(idx, sd) // short send: the rest
		return
	}
	p.recycle(s.q[0].bid)
	s.off = 0
	s.q = s.q[:copy(s.q, s.q[1:])]
	if len(s.q) > 0 {
		p.send(idx, sd)
	} else if s.eof {
		p.halfClose(idx, sd)
	}
}

func (p *proxy) recycle(bid uint16) {
	p.br.Add(bid)
	p.recycled = true
}

// close ends a pair: shutting both sockets down completes its armed receives; once no
// operation is in flight the descriptors are closed and the slot is freed.
func (p *proxy) close(idx int) {
	pr := &p.pairs[idx]
	if !pr.used {
		return
	}
	if !pr.closing {
		pr.closing = true
		_ = unix.Shutdown(pr.sides[client].fd, unix.SHUT_RDWR)
		_ = unix.Shutdown(pr.sides[backend].fd, unix.SHUT_RDWR)
	}
	if pr.refs > 0 {
		return
	}
	for i := range pr.sides {
		for _, ch := range pr.sides[i].q {
			p.recycle(ch.bid)
		}
		pr.sides[i].q = pr.sides[i].q[:0]
	}
	if p.maxPairs > 0 {
		_ = p.r.UpdateFiles(uint32(2*idx), []int32{-1, -1})
	}
	unix.Close(pr.sides[client].fd)
	unix.Close(pr.sides[backend].fd)
	pr.used = false
	p.free = append(p.free, idx)
}
