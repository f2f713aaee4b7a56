//go:build linux

package l4

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lb/sessions"
)

// The stress test runs many connections at once through one Server, each with its own plan
// drawn from one seed: what the backend does, how many bytes go each way, how the client
// writes them, who half-closes first, who reads slowly. Every byte must arrive, once, in
// order, both ways; no connection may hang; and afterwards lb must hold no connection, no
// pipe beyond its loops' and no descriptor.
//
// LB_STRESS_SEED=n replays a run (the seed is logged). go test -short runs a smaller one.

const (
	stressConns    = 200
	stressParallel = 40 // connections in flight: 4 sockets each, client's, lb's two, backend's
	stressMaxBytes = 4 << 20
	stressDeadline = 30 * time.Second // for the whole run, on every socket: a hung connection fails, it does not hang the test
	slowReadEvery  = time.Millisecond // a slow reader takes slowReadBytes this often
	slowReadBytes  = 32 << 10
)

// stressScale is the size of a run: the full soak, or the smaller one of go test -short.
type stressScale struct {
	conns, parallel, maxBytes int
	deadline                  time.Duration
}

var (
	fullStress  = stressScale{stressConns, stressParallel, stressMaxBytes, stressDeadline}
	shortStress = stressScale{conns: 60, parallel: 20, maxBytes: 1 << 20, deadline: 15 * time.Second}
)

type stressKind uint8

const (
	echoes       stressKind = iota // the backend echoes until the client's FIN, then half-closes
	answersAtFIN                   // the backend reads to the client's FIN, then answers and closes
	readsSlowly                    // the backend answers and half-closes at once, then reads slowly
	stressKinds
)

var stressKindNames = [...]string{"echoes", "answers-at-FIN", "reads-slowly"}

// stressPlan is one connection's script.
type stressPlan struct {
	kind       stressKind
	httpHead   bool   // open with an HTTP request head, sniffed to its end, rather than 7 binary bytes
	pieces     int    // the opening is written in this many pieces: sniffing takes several reads
	up, down   []byte // client → backend, backend → client (echoes: down is up)
	upChunk    int    // the client writes up in pieces of 1 to upChunk bytes
	downChunk  int    // the backend writes down in pieces of 1 to downChunk bytes
	clientSlow bool   // the client reads slowly: the backend → client flow stalls
	tight      bool   // through the listener whose sockets have a small send buffer, with a small receive buffer at the client
	finLast    bool   // readsSlowly: the client half-closes only after the backend's FIN
	closeAll   bool   // finLast: the client closes outright rather than half-closing
	cookies    string // sticky runs: the Cookie header of the opening, if any
	respHead   []byte // sticky runs: the response head the backend sends before down
	cookieSet  bool   // sticky runs: lb must insert its cookie into respHead
}

func (p *stressPlan) String() string {
	return fmt.Sprintf("%s http=%v pieces=%d up=%d down=%d upChunk=%d downChunk=%d clientSlow=%v tight=%v finLast=%v closeAll=%v",
		stressKindNames[p.kind], p.httpHead, p.pieces, len(p.up), len(p.down), p.upChunk, p.downChunk,
		p.clientSlow, p.tight, p.finLast, p.closeAll)
}

// stressSize draws a payload size from 0 to stressMaxBytes: empty, on the data path's
// boundaries, spread evenly over the orders of magnitude, or the largest.
func stressSize(r *rand.Rand) int { return stressSizeUpTo(r, stressMaxBytes) }

// stressSizeUpTo is stressSize with largest as the largest size (at least pipeSize+1).
func stressSizeUpTo(r *rand.Rand, largest int) int {
	switch x := r.IntN(100); {
	case x < 12:
		return 0
	case x < 22:
		edges := [...]int{1, copySize - 1, copySize, copySize + 1, pipeSize - 1, pipeSize, pipeSize + 1}
		return edges[r.IntN(len(edges))]
	case x < 95:
		return int(float64(largest) * math.Exp2(-math.Log2(float64(largest))*r.Float64())) // 1 B to largest, log-uniform
	default:
		return largest
	}
}

// stressChunk draws the largest write for n bytes: tiny to large, but never so small that n
// takes more than about 500 writes.
func stressChunk(r *rand.Rand, n int) int {
	sizes := [...]int{1, 7, 100, 1 << 10, copySize, pipeSize, 1 << 20}
	return max(sizes[r.IntN(len(sizes))], n/500, 1)
}

func newStressPlans(r *rand.Rand, data []byte) []stressPlan {
	return newScaledStressPlans(r, data, fullStress)
}

// newScaledStressPlans draws sc.conns plans with payloads of up to sc.maxBytes, slices of
// data (at least that long).
func newScaledStressPlans(r *rand.Rand, data []byte, sc stressScale) []stressPlan {
	slice := func(n int) []byte {
		off := r.IntN(len(data) - n + 1)
		return data[off : off+n : off+n]
	}
	plans := make([]stressPlan, sc.conns)
	for i := range plans {
		p := &plans[i]
		p.kind = stressKind(r.IntN(int(stressKinds)))
		p.httpHead = r.IntN(2) == 0
		switch x := r.IntN(10); {
		case x < 6:
			p.pieces = 1
		case x < 9:
			p.pieces = 2 + r.IntN(4)
		default:
			p.pieces = 1 << 10 // byte by byte: empty pieces are skipped
		}
		p.up = slice(stressSizeUpTo(r, sc.maxBytes))
		p.down = p.up
		if p.kind != echoes {
			p.down = slice(stressSizeUpTo(r, sc.maxBytes))
		}
		p.upChunk, p.downChunk = stressChunk(r, len(p.up)), stressChunk(r, len(p.down))
		p.clientSlow = r.IntN(10) < 3
		p.tight = r.IntN(3) == 0
		if p.kind == readsSlowly {
			p.finLast = r.IntN(2) == 0
			p.closeAll = p.finLast && r.IntN(2) == 0
		}
	}
	return plans
}

// opening is what the client sends first, naming its plan: an HTTP request head, or 7 bytes
// that lb's sniffer rules out as HTTP at the first byte.
func opening(i int, p *stressPlan) []byte {
	if p.httpHead {
		cookie := ""
		if p.cookies != "" {
			cookie = "Cookie: " + p.cookies + "\r\n"
		}
		return []byte("PUT /" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: stress\r\n" + cookie + "Content-Type: application/octet-stream\r\n\r\n")
	}
	return binary.BigEndian.AppendUint32([]byte{0, 'L', 'B'}, uint32(i))
}

// readOpening reads the opening byte by byte, so that no payload byte is taken with it, and
// returns the plan it names.
func readOpening(c *net.TCPConn) (int, error) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return -1, err
	}
	if b[0] == 0 {
		var rest [6]byte
		if _, err := io.ReadFull(c, rest[:]); err != nil {
			return -1, err
		}
		return int(binary.BigEndian.Uint32(rest[2:])), nil
	}
	head := []byte{b[0]}
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if len(head) > 256 {
			return -1, fmt.Errorf("opening %q has no end", head)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return -1, err
		}
		head = append(head, b[0])
	}
	path, _, _ := strings.Cut(strings.TrimPrefix(string(head), "PUT /"), " ")
	return strconv.Atoi(path)
}

// writeChunks writes b in pieces of 1 to max bytes drawn from r.
func writeChunks(c *net.TCPConn, b []byte, max int, r *rand.Rand) error {
	for len(b) > 0 {
		n := min(len(b), 1+r.IntN(max))
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readAllHashed reads c to EOF, slowly if asked, and returns the hash of what came and how much.
func readAllHashed(c *net.TCPConn, slow bool) ([sha256.Size]byte, int64, error) {
	return readOnHashed(c, sha256.New(), 0, slow)
}

// readResponse is readAllHashed for a sticky run's response: it reads the response head,
// interim heads and all, and takes lb's cookie line out of the final one, which must have
// it if the plan says so, and only then. What is left must be the backend's bytes.
func readResponse(c *net.TCPConn, p *stressPlan) ([sha256.Size]byte, int64, error) {
	br := bufio.NewReader(c)
	h := sha256.New()
	var n int64
	final, inserted := false, false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return [sha256.Size]byte{}, n, fmt.Errorf("response head: %w", err)
		}
		if strings.HasPrefix(line, "HTTP/1.1 ") {
			final = !strings.HasPrefix(line, "HTTP/1.1 1")
		}
		if final && strings.HasPrefix(line, "Set-Cookie: "+stressCookie+"=") {
			id, _, _ := strings.Cut(strings.TrimPrefix(line, "Set-Cookie: "+stressCookie+"="), ";")
			if inserted || (id != "b0" && id != "b1") {
				return [sha256.Size]byte{}, n, fmt.Errorf("lb's cookie line %q, after one: %v", line, inserted)
			}
			inserted = true
			continue
		}
		h.Write([]byte(line))
		n += int64(len(line))
		if final && line == "\r\n" {
			break
		}
	}
	if inserted != p.cookieSet {
		return [sha256.Size]byte{}, n, fmt.Errorf("lb's cookie inserted: %v, want %v", inserted, p.cookieSet)
	}
	return readOnHashed(br, h, n, p.clientSlow)
}

// readOnHashed reads r to EOF into h, slowly if asked; n bytes went into h before.
func readOnHashed(r io.Reader, h hash.Hash, n int64, slow bool) ([sha256.Size]byte, int64, error) {
	if !slow {
		m, err := io.Copy(h, r)
		return [sha256.Size]byte(h.Sum(nil)), n + m, err
	}
	tick := time.NewTicker(slowReadEvery)
	defer tick.Stop()
	buf := make([]byte, slowReadBytes)
	total := n
	for {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		if err == io.EOF {
			return [sha256.Size]byte(h.Sum(nil)), total, nil
		}
		if err != nil {
			return [sha256.Size]byte{}, total, err
		}
		<-tick.C
	}
}

// checkHashed checks what readAllHashed returned against the parts of what was sent.
func checkHashed(what string, got [sha256.Size]byte, n int64, err error, want ...[]byte) error {
	h, size := sha256.New(), 0
	for _, part := range want {
		h.Write(part)
		size += len(part)
	}
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w after %d of %d bytes", what, err, n, size)
	case n != int64(size) || got != [sha256.Size]byte(h.Sum(nil)):
		return fmt.Errorf("%s: %d bytes, want %d, equal: %v", what, n, size, n == int64(size))
	}
	return nil
}

// smallBuffer sets a socket's SO_SNDBUF or SO_RCVBUF to 16 KiB (Linux doubles it), which also
// stops Linux from growing it.
func smallBuffer(opt int) func(_, _ string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 16<<10) })
	}
}

// lbConns describes the connections s holds, as their loops see them.
func lbConns(s *Server) []string {
	var conns []string
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c == nil {
					continue
				}
				desc := fmt.Sprintf("phase %d", c.phase)
				for side, en := range c.ends {
					desc += fmt.Sprintf("; end %d: fd %d, events %#x (in set: %v), eof %v, pending %d, bulk %v, moved %d",
						side, en.fd, en.events, en.watched, en.eof, en.pending, en.bulk, en.moved)
				}
				conns = append(conns, desc)
			}
		})
	}
	return conns
}

// openFDs maps the process's descriptors to what they are.
func openFDs() map[string]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	fds := map[string]string{}
	for _, e := range ents {
		// One entry is the descriptor ReadDir listed the folder with, closed by now: skip it
		// (it gets whatever number is free, so it would count as new when that changed).
		if what, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			fds[e.Name()] = what
		}
	}
	return fds
}

// newFDs lists the descriptors open now that were not in before.
func newFDs(before map[string]string) []string {
	var fresh []string
	for fd, what := range openFDs() {
		if before[fd] != what {
			fresh = append(fresh, fd+"="+what)
		}
	}
	return fresh
}

type stressRun struct {
	plans       []stressPlan
	seed        uint64
	deadline    time.Time
	mu          sync.Mutex
	errs        []string
	backendDone atomic.Int64
	allBackends chan struct{} // closed when every backend handler has ended
}

// fail records the error of connection i, or of a backend that could not tell its plan (i < 0).
func (st *stressRun) fail(i int, err error) {
	msg := fmt.Sprintf("backend: %v", err)
	if i >= 0 {
		msg = fmt.Sprintf("conn %d (%v): %v", i, &st.plans[i], err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.errs = append(st.errs, msg)
}

// backend plays its side of the plan the opening names.
func (st *stressRun) backend(c *net.TCPConn) {
	defer func() {
		c.Close() // before the count: the descriptor check waits on it
		if st.backendDone.Add(1) == int64(len(st.plans)) {
			close(st.allBackends)
		}
	}()
	c.SetDeadline(st.deadline)
	i, err := readOpening(c)
	if err != nil || i < 0 || i >= len(st.plans) {
		st.fail(-1, fmt.Errorf("opening: plan %d, %v", i, err))
		return
	}
	p := &st.plans[i]
	r := rand.New(rand.NewPCG(st.seed, uint64(i)<<1|1))
	switch p.kind {
	case echoes:
		// Not io.Copy(c, c): Go would splice through pipes that it keeps until a GC, and the
		// descriptor count would see them.
		n, err := io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		if err == nil && n != int64(len(p.up)) {
			err = fmt.Errorf("echoed %d bytes, the client sends %d", n, len(p.up))
		}
		if err == nil {
			err = c.CloseWrite()
		}
		if err != nil {
			st.fail(i, fmt.Errorf("backend: %w", err))
		}
	case answersAtFIN:
		sum, n, err := readAllHashed(c, false)
		if err = checkHashed("backend read", sum, n, err, p.up); err == nil {
			if err = writeChunks(c, p.respHead, max(len(p.respHead), 1), r); err == nil {
				err = writeChunks(c, p.down, p.downChunk, r)
			}
			if err == nil {
				err = c.CloseWrite()
			}
		}
		if err != nil {
			st.fail(i, fmt.Errorf("backend: %w", err))
		}
	case readsSlowly:
		err := writeChunks(c, p.respHead, max(len(p.respHead), 1), r)
		if err == nil {
			err = writeChunks(c, p.down, p.downChunk, r)
		}
		if err == nil {
			err = c.CloseWrite()
		}
		if err == nil {
			sum, n, rerr := readAllHashed(c, true)
			err = checkHashed("backend read", sum, n, rerr, p.up)
		}
		if err != nil {
			st.fail(i, fmt.Errorf("backend: %w", err))
		}
	}
}

// client plays the client's side of plan i through lb at addr, or at tightAddr.
func (st *stressRun) client(i int, addr, tightAddr string) error {
	p := &st.plans[i]
	r := rand.New(rand.NewPCG(st.seed, uint64(i)<<1))
	var d net.Dialer
	if p.tight {
		addr, d.Control = tightAddr, smallBuffer(unix.SO_RCVBUF)
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	c := nc.(*net.TCPConn)
	defer c.Close()
	c.SetDeadline(st.deadline)
	open := opening(i, p)
	for k := range p.pieces {
		piece := open[len(open)*k/p.pieces : len(open)*(k+1)/p.pieces]
		if len(piece) == 0 {
			continue
		}
		if _, err := c.Write(piece); err != nil {
			return fmt.Errorf("opening: %w", err)
		}
	}
	wrote := make(chan error, 1)
	go writeUp(c, p, r, wrote)
	read := readAllHashed
	if len(p.respHead) > 0 {
		read = func(c *net.TCPConn, _ bool) ([sha256.Size]byte, int64, error) { return readResponse(c, p) }
	}
	sum, n, rerr := read(c, p.clientSlow)
	if err := checkHashed("client read", sum, n, rerr, p.respHead, p.down); err != nil {
		c.Close() // unblocks the writer
		<-wrote
		return err
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	if p.finLast && !p.closeAll {
		return c.CloseWrite()
	}
	return nil
}

// writeUp writes the client's bytes, then half-closes unless the plan has the backend's FIN
// come first.
func writeUp(c *net.TCPConn, p *stressPlan, r *rand.Rand, done chan<- error) {
	err := writeChunks(c, p.up, p.upChunk, r)
	if err == nil && !p.finLast {
		err = c.CloseWrite()
	}
	done <- err
}

func TestStress(t *testing.T) { runStress(t, testConfig()) }

// stressCookie is lb's sticky cookie in the sticky runs; SID is the application's session.
const stressCookie = "lbs"

// TestStressSticky is the stress test with both sticky modes on: every HTTP plan's backend
// answers with a response head that sets a session, which lb learns and into which it
// inserts its cookie when the request did not name an up backend; requests carry cookies
// that name a backend, none, or one that does not exist, and sessions learned before.
func TestStressSticky(t *testing.T) {
	memory, slow := sessions.NewMemoryStore(10_000, time.Minute), &slowStore{Store: sessions.NewMemoryStore(10_000, time.Minute), timeoutEvery: 5}
	for _, tc := range []struct {
		name   string
		store  sessions.Store
		called func() bool
	}{
		{"memory store", memory, func() bool { return memory.Len() > 0 }},
		// Off the loop, answering in 0 to 20 ms; the first lookup and every fifth after it
		// outlast --connect-timeout, and the ring decides.
		{"slow store", slow, func() bool { return slow.gets.Load() > 0 && slow.sets.Load() > 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.ConnectTimeout = 300 * time.Millisecond
			cfg.Sticky = Sticky{Cookie: stressCookie, CookieAttrs: "Path=/", SessionCookie: "SID",
				Sessions: tc.store, Keyer: sessions.NewKeyer([]byte("stress"))}
			runStress(t, cfg)
			if !tc.called() {
				t.Error("the run did not use the session store: it proves nothing of it")
			}
		})
	}
}

// slowStore answers after a delay, off the loop; the first Get and every timeoutEvery-th after
// it take a second,
// longer than the tests' --connect-timeout.
type slowStore struct {
	sessions.Store
	timeoutEvery int64
	gets, sets   atomic.Int64
}

func (s *slowStore) Get(ctx context.Context, key string) (string, bool, error) {
	if s.gets.Add(1)%s.timeoutEvery == 1 {
		time.Sleep(time.Second)
	}
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	return s.Store.Get(ctx, key)
}

func (s *slowStore) Set(ctx context.Context, key, id string) error {
	s.sets.Add(1)
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	return s.Store.Set(ctx, key, id)
}

// withStickyHeads gives the HTTP plans of a sticky run their cookies and response heads.
func withStickyHeads(r *rand.Rand, plans []stressPlan) {
	for i := range plans {
		p := &plans[i]
		if !p.httpHead {
			continue
		}
		var cookies []string
		own := []string{"", "b0", "b1", "nobody"}[r.IntN(4)]
		if own != "" {
			cookies = append(cookies, stressCookie+"="+own)
		}
		if i > 0 && r.IntN(3) > 0 {
			cookies = append(cookies, "SID=s"+strconv.Itoa(r.IntN(i))) // learned, or still to be
		}
		p.cookies = strings.Join(cookies, "; ")
		if p.kind == echoes {
			continue // the echo of binary bytes: lb passes on a head it cannot parse as it came
		}
		p.cookieSet = own != "b0" && own != "b1"
		if r.IntN(3) == 0 {
			p.respHead = []byte("HTTP/1.1 100 Continue\r\n\r\n")
		}
		p.respHead = append(p.respHead, "HTTP/1.1 200 OK\r\nSet-Cookie: SID=s"+strconv.Itoa(i)+"; Path=/\r\nContent-Type: application/octet-stream\r\n\r\n"...)
	}
}

// runStress runs the stress test through a Server of cfg.
func runStress(t *testing.T, cfg Config) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LB_STRESS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("LB_STRESS_SEED: %v", err)
		}
	}
	sc := fullStress
	if testing.Short() {
		sc = shortStress
	}
	t.Logf("LB_STRESS_SEED=%d, %d connections of up to %d bytes each way", seed, sc.conns, sc.maxBytes)
	r := rand.New(rand.NewPCG(seed, 0))
	data := make([]byte, 2*sc.maxBytes)
	rand.NewChaCha8([32]byte(binary.LittleEndian.AppendUint64(make([]byte, 24), seed))).Read(data)
	st := &stressRun{plans: newScaledStressPlans(r, data, sc), seed: seed, deadline: time.Now().Add(sc.deadline),
		allBackends: make(chan struct{})}
	if cfg.Sticky.Cookie != "" {
		withStickyHeads(r, st.plans)
	}

	b1, b2 := startBackend(t, st.backend), startBackend(t, st.backend)
	// Descriptors by number and what they are, not a count: pipes that Go's own splice cached
	// for earlier tests may be closed by a GC meanwhile.
	fdsBefore := openFDs()
	s := startServer(t, cfg, b1.addr(), b2.addr())
	// A second listener, whose sockets inherit a small, fixed send buffer: writes to tight
	// clients come up short, and the rest waits in a pipe.
	lc := net.ListenConfig{Control: smallBuffer(unix.SO_SNDBUF)}
	tight, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tightServed := make(chan error, 1)
	go func() { tightServed <- s.Serve(tight) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx) // ErrServerClosed if the test got to its own
		if err := <-tightServed; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	}()

	start := time.Now()
	sem := make(chan struct{}, sc.parallel)
	var clients sync.WaitGroup
	for i := range st.plans {
		sem <- struct{}{}
		clients.Add(1)
		go func() {
			defer clients.Done()
			defer func() { <-sem }()
			if err := st.client(i, s.addr, tight.Addr().String()); err != nil {
				st.fail(i, err)
			}
		}()
	}
	clients.Wait()
	select { // backends end by the deadline too: their errors are worth the wait
	case <-st.allBackends:
	case <-time.After(time.Until(st.deadline) + time.Second):
	}
	var up, down int
	for _, p := range st.plans {
		up, down = up+len(p.up), down+len(p.down)
	}
	t.Logf("%d connections, %d MiB up, %d MiB down, in %v; %+v",
		len(st.plans), up>>20, down>>20, time.Since(start).Round(time.Millisecond), s.Stats())
	st.mu.Lock()
	for _, e := range st.errs {
		t.Error(e)
	}
	st.mu.Unlock()
	if n := st.backendDone.Load(); n != int64(len(st.plans)) {
		t.Errorf("%d of %d backend handlers ended", n, len(st.plans))
	}
	if t.Failed() {
		t.Logf("lb's connections: %v", lbConns(s.Server))
		return
	}

	waitFor(t, "lb closed every connection", func() bool { return s.Stats().Active == 0 })
	if p := s.Stats().PipesInUse; p > int64(len(s.loops)) {
		t.Errorf("%d pipes in use with no connection; want at most one per loop (%d)", p, len(s.loops))
	}
	// What lb holds now: per loop its engine's descriptors, its two listeners, and its pipes (in
	// use: the loops' hot ones; free: kept for reuse). No other socket.
	s.pipes.mu.Lock()
	pipes := int(s.pipes.inUse.Load()) + len(s.pipes.free)
	s.pipes.mu.Unlock()
	fresh, sockets := newFDs(fdsBefore), 0
	for _, fd := range fresh {
		if strings.Contains(fd, "socket:") {
			sockets++
		}
	}
	if want := loopFDs(s.Engine())*len(s.loops) + 2 + 2*pipes; len(fresh) != want || sockets != 2 {
		t.Errorf("lb holds %d descriptors (%d sockets) with no connection, want %d (%d loops, 2 listeners, %d pipes): %v",
			len(fresh), sockets, want, len(s.loops), pipes, fresh)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with no connection: %v", err)
	}
	if fresh := newFDs(fdsBefore); len(fresh) != 0 {
		t.Errorf("descriptors left after Shutdown: %v", fresh)
	}
}
