//go:build linux

package l4

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"lb/accesslog"
	"lb/admit"
	"lb/ring"
)

// unixPair returns the two ends of a Unix stream socketpair, closed when the test ends.
func unixPair(t testing.TB) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ends [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "handover")
		c, err := net.FileConn(f)
		f.Close() // FileConn has its own copy
		if err != nil {
			t.Fatal(err)
		}
		ends[i] = c.(*net.UnixConn)
		t.Cleanup(func() { ends[i].Close() })
	}
	return ends[0], ends[1]
}

// sharedListener returns a listener on the same socket as ln, as the new process gets it.
func sharedListener(t testing.TB, addr string, ln net.Listener) net.Listener {
	t.Helper()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dup, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	if dup.Addr().String() != addr {
		t.Fatalf("shared listener on %s, want %s", dup.Addr(), addr)
	}
	return dup
}

// upgrade is an old server A and a new one B on the same listening socket and backends.
type upgrade struct {
	a, b  *testServer
	ln    net.Listener
	addrs []string
}

// startUpgrade starts A; start B with newB once A holds the test's connections (B accepts
// from the shared socket too).
func startUpgrade(t *testing.T, cfgA Config, addrs ...string) *upgrade {
	t.Helper()
	ln := listenLoopback(t)
	return &upgrade{a: serveOn(t, cfgA, ln, addrs...), ln: ln, addrs: addrs}
}

func (u *upgrade) newB(t *testing.T, cfg Config) {
	t.Helper()
	u.b = serveOn(t, cfg, sharedListener(t, u.a.addr, u.ln), u.addrs...)
	// Adopt finds a connection's listener among those the server serves: Serve's goroutine
	// must have registered it.
	waitFor(t, "B to serve the shared listener", func() bool {
		u.b.mu.Lock()
		defer u.b.mu.Unlock()
		return u.b.listenerAt(u.a.addr) != nil
	})
}

// handOver runs A's Handover against B's Adopt, over a socketpair of its own, and checks
// that B adopted what A moved.
func (u *upgrade) handOver(t *testing.T, ctx context.Context) (moved, kept int, err error) {
	t.Helper()
	au, bu := unixPair(t)
	type result struct {
		n   int
		err error
	}
	adopted := make(chan result, 1)
	go func() {
		n, err := u.b.Adopt(bu)
		adopted <- result{n, err}
	}()
	moved, kept, err = u.a.Handover(ctx, au)
	r := <-adopted // Handover shut the socket for writing: Adopt has returned or will
	if err == nil && (r.err != nil || r.n != moved) {
		t.Fatalf("B adopted %d (%v), A moved %d", r.n, r.err, moved)
	}
	return moved, kept, err
}

// keepAlive sends one request on c and checks the answer.
func keepAlive(t *testing.T, c *net.TCPConn, br *bufio.Reader, want string) {
	t.Helper()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != want {
		t.Fatalf("body %q (%v), want %q", body, err, want)
	}
}

// phasesOf counts the open connections of s by phase.
func phasesOf(s *Server) map[phase]int {
	got := map[phase]int{}
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil {
					got[c.phase]++
				}
			}
		})
	}
	return got
}

func listenerRow(s *Server, name string) (accepted uint64, active int64) {
	for _, row := range collect(s).Listeners {
		if row.Name == name {
			return row.Accepted, row.Active
		}
	}
	return 0, 0
}

func ringActive(r *ring.Ring, id string) int64 {
	for _, st := range r.Snapshot() {
		if st.ID == id {
			return st.Active
		}
	}
	return -1
}

// TestHandoverMovesKeepAliveClients: keep-alive clients of A go on through B after the
// hand-over; A shuts down at once with nothing left, and the gauges moved with them.
func TestHandoverMovesKeepAliveClients(t *testing.T) {
	const n = 150 // more than two batches
	backend := startBackend(t, httpName("x"))
	u := startUpgrade(t, testConfig(), backend.addr())
	clients, readers := keepAliveClients(t, u.a, n)

	u.newB(t, testConfig())
	moved, kept, err := u.handOver(t, context.Background())
	if err != nil || moved != n || kept != 0 {
		t.Fatalf("Handover: moved %d, kept %d, %v; want %d, 0, nil", moved, kept, err, n)
	}
	if _, active := listenerRow(u.a.Server, u.a.addr); active != 0 {
		t.Errorf("A's listener: %d active after the hand-over, want 0", active)
	}
	if row := backendRow(collect(u.a.Server), "b0"); row.Active != 0 || row.BytesReceived == 0 {
		t.Errorf("A's backend row: %d active, %d bytes received; want 0 and the answers' bytes", row.Active, row.BytesReceived)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := u.a.Shutdown(ctx); err != nil {
		t.Fatalf("A's Shutdown with nothing left: %v", err)
	}

	for i := range clients {
		keepAlive(t, clients[i], readers[i], "x")
	}
	if got := u.b.Stats().Active; got != n {
		t.Errorf("B holds %d connections, want %d", got, n)
	}
	if accepted, active := listenerRow(u.b.Server, u.b.addr); accepted != 0 || active != n {
		t.Errorf("B's listener: accepted %d, active %d; want 0 (not accepted again), %d", accepted, active, n)
	}
	if got := backendRow(collect(u.b.Server), "b0").Active; got != n {
		t.Errorf("B's backend row: %d active, want %d", got, n)
	}
	if got := ringActive(u.b.ring, "b0"); got != n {
		t.Errorf("B's ring counts %d active at b0, want %d", got, n)
	}
	if got := ringActive(u.a.ring, "b0"); got != 0 {
		t.Errorf("A's ring counts %d active at b0, want 0", got)
	}
	for _, c := range clients {
		c.Close()
	}
	waitFor(t, "B's connections to close", func() bool { return u.b.Stats().Active == 0 })
	if _, active := listenerRow(u.b.Server, u.b.addr); active != 0 {
		t.Errorf("B's listener: %d active after every client closed", active)
	}
}

// echoed writes payload to c on a goroutine, reads as much back, and checks it byte for byte.
func echoed(t *testing.T, c *net.TCPConn, payload []byte, halfClose bool) {
	t.Helper()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil && halfClose {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, c, int64(len(payload))); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(payload); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the echo differs from what was sent")
	}
}

// TestHandoverMidStreamIsByteExact: an echo connection moves between two exchanges and
// then carries 32 MiB each way through B, byte for byte.
func TestHandoverMidStreamIsByteExact(t *testing.T) {
	backend := startBackend(t, echo)
	u := startUpgrade(t, testConfig(), backend.addr())
	c := dial(t, u.a.addr)
	c.SetDeadline(time.Now().Add(4 * ioDeadline)) // 32 MiB under -race on a busy machine
	echoed(t, c, randomBytes(t, 1<<20), false)
	waitFor(t, "the connection to hold no byte in A", func() bool { return phasesOf(u.a.Server)[splicing] == 1 })

	u.newB(t, testConfig())
	if moved, kept, err := u.handOver(t, context.Background()); err != nil || moved != 1 || kept != 0 {
		t.Fatalf("Handover: moved %d, kept %d, %v", moved, kept, err)
	}
	echoed(t, c, randomBytes(t, 32<<20), true)
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the echo: %v, want EOF", err)
	}
	waitFor(t, "B to close the connection", func() bool { return u.b.Stats().Active == 0 })
}

// pendingBytes reports whether a connection of s holds bytes in a pipe.
func pendingBytes(s *Server) bool {
	held := false
	for _, l := range s.loops {
		l.call(func() {
			for _, c := range l.conns.slots {
				if c != nil && (c.ends[clientSide].pending > 0 || c.ends[backendSide].pending > 0) {
					held = true
				}
			}
		})
	}
	return held
}

// TestHandoverFlushesAPipeFirst: a connection whose pipe holds bytes for a slow reader does
// not move while they wait there, moves once they are written, and the reader gets every
// byte.
func TestHandoverFlushesAPipeFirst(t *testing.T) {
	blob := randomBytes(t, 16<<20)
	backend := startBackend(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, io.LimitReader(c, 1)) // one byte to start
		c.Write(blob)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	u := startUpgrade(t, testConfig(), backend.addr())
	c := dial(t, u.a.addr)
	c.SetDeadline(time.Now().Add(4 * ioDeadline))
	c.Write([]byte{'!'})
	waitFor(t, "A to hold bytes in a pipe for the client", func() bool { return pendingBytes(u.a.Server) })

	// While the client reads nothing the bytes stay in the pipe: the connection stays too.
	u.newB(t, testConfig())
	short, cancelShort := context.WithTimeout(context.Background(), 50*flushPoll)
	defer cancelShort()
	if moved, kept, err := u.handOver(t, short); err != nil || moved != 0 || kept != 1 || !pendingBytes(u.a.Server) {
		t.Fatalf("Handover with bytes in the pipe: moved %d, kept %d, %v; want 0, 1, nil, the bytes still there", moved, kept, err)
	}

	type result struct {
		moved, kept int
		err         error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*ioDeadline)
	defer cancel()
	go func() {
		moved, kept, err := u.handOver(t, ctx)
		done <- result{moved, kept, err}
	}()
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil { // the slow reader starts: the pipe empties
		t.Fatal(err)
	}
	if want := sha256.Sum256(blob); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the client got other bytes than the backend sent")
	}
	if r := <-done; r.err != nil || r.moved != 1 || r.kept != 0 {
		t.Fatalf("Handover: moved %d, kept %d, %v; want 1, 0, nil", r.moved, r.kept, r.err)
	}
	c.Close()
	waitFor(t, "B to close the connection", func() bool { return u.b.Stats().Active == 0 })
}

// TestHandoverLeavesASniffingConnection: a client whose head is still coming stays in A and
// is served there.
func TestHandoverLeavesASniffingConnection(t *testing.T) {
	backend := startBackend(t, httpName("x"))
	u := startUpgrade(t, testConfig(), backend.addr())
	c := dial(t, u.a.addr)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\n")
	waitFor(t, "A to sniff the connection", func() bool { return phasesOf(u.a.Server)[sniffing] == 1 })

	u.newB(t, testConfig())
	if moved, kept, err := u.handOver(t, context.Background()); err != nil || moved != 0 || kept != 1 {
		t.Fatalf("Handover: moved %d, kept %d, %v; want 0, 1, nil", moved, kept, err)
	}
	fmt.Fprintf(c, "Host: t\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("answer through A: %v, %v", resp, err)
	}
	resp.Body.Close()
	c.Close()
	waitFor(t, "A to close it", func() bool { return u.a.Stats().Active == 0 })
	if got := u.b.Stats().Active; got != 0 {
		t.Errorf("B holds %d connections, want 0", got)
	}
}

// TestHandoverRefusedStaysInA: connections a receiver does not take (it closes before its
// ack, or it is at its connection limit) go on working through A.
func TestHandoverRefusedStaysInA(t *testing.T) {
	t.Run("closed before ack", func(t *testing.T) {
		backend := startBackend(t, httpName("x"))
		a := startServer(t, testConfig(), backend.addr())
		clients, readers := keepAliveClients(t, a, 3)
		au, bu := unixPair(t)
		go func() { // reads a batch, drops its sockets and hangs up without an ack
			oob := make([]byte, unix.CmsgSpace(2*batchConns*4))
			_, oobn, _, _, _ := bu.ReadMsgUnix(make([]byte, batchHeader+batchConns*recordSize), oob)
			closeFDs(rights(oob[:oobn]))
			bu.Close()
		}()
		moved, kept, err := a.Handover(context.Background(), au)
		if err == nil || moved != 0 || kept != 3 {
			t.Fatalf("Handover: moved %d, kept %d, %v; want 0, 3, an error", moved, kept, err)
		}
		for i := range clients {
			keepAlive(t, clients[i], readers[i], "x")
		}
		if got := phasesOf(a.Server)[splicing]; got != 3 {
			t.Fatalf("%d connections splicing in A, want 3", got)
		}
	})
	t.Run("at its limit", func(t *testing.T) {
		backend := startBackend(t, httpName("x"))
		cfgB := testConfig()
		cfgB.MaxConns = 2
		u := startUpgrade(t, testConfig(), backend.addr())
		clients, readers := keepAliveClients(t, u.a, 5)
		u.newB(t, cfgB)
		moved, kept, err := u.handOver(t, context.Background())
		if err != nil || moved != 2 || kept != 3 {
			t.Fatalf("Handover: moved %d, kept %d, %v; want 2, 3, nil", moved, kept, err)
		}
		for i := range clients {
			keepAlive(t, clients[i], readers[i], "x")
		}
		if a, b := u.a.Stats().Active, u.b.Stats().Active; a != 3 || b != 2 {
			t.Fatalf("A holds %d, B %d; want 3, 2", a, b)
		}
		for _, c := range clients {
			c.Close() // before B's Shutdown, which the test's cleanup runs first
		}
	})
}

// keepAliveClients opens n keep-alive clients through s, each answered once.
func keepAliveClients(t *testing.T, s *testServer, n int) ([]*net.TCPConn, []*bufio.Reader) {
	t.Helper()
	clients := make([]*net.TCPConn, n)
	readers := make([]*bufio.Reader, n)
	for i := range clients {
		clients[i] = dial(t, s.addr)
		readers[i] = bufio.NewReader(clients[i])
		keepAlive(t, clients[i], readers[i], "x")
	}
	waitFor(t, "every client splicing", func() bool { return phasesOf(s.Server)[splicing] == n })
	return clients, readers
}

// TestHandoverHalfClosed: a connection whose client already sent its FIN moves, and the
// backend's late answer and FIN reach the client through B. B writes the one access log line
// of its whole life, with the bytes moved in A; A writes none.
func TestHandoverHalfClosed(t *testing.T) {
	gotEOF, answer := make(chan string, 1), make(chan struct{})
	backend := startBackend(t, func(c *net.TCPConn) {
		req, _ := io.ReadAll(c)
		gotEOF <- string(req)
		<-answer
		c.Write([]byte("late answer"))
		c.CloseWrite()
	})
	cfgA, cfgB := testConfig(), testConfig()
	logA, pathA := openAccessLog(t)
	logB, pathB := openAccessLog(t)
	cfgA.AccessLog, cfgB.AccessLog = logA, logB
	u := startUpgrade(t, cfgA, backend.addr())
	c := dial(t, u.a.addr)
	c.Write([]byte("question"))
	c.CloseWrite()
	if req := <-gotEOF; req != "question" {
		t.Fatalf("backend read %q", req)
	}
	waitFor(t, "the connection to splice in A", func() bool { return phasesOf(u.a.Server)[splicing] == 1 })

	u.newB(t, cfgB)
	moved, kept, err := u.handOver(t, context.Background())
	close(answer)
	if err != nil || moved != 1 || kept != 0 {
		t.Fatalf("Handover: moved %d, kept %d, %v", moved, kept, err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "late answer" {
		t.Fatalf("client read %q (%v), want the late answer and EOF", got, err)
	}
	waitFor(t, "B to close the connection", func() bool { return u.b.Stats().Active == 0 })
	if _, active := listenerRow(u.b.Server, u.b.addr); active != 0 {
		t.Errorf("B's listener: %d active", active)
	}
	if lines := accessLines(t, logA, pathA); len(lines) != 0 {
		t.Errorf("A logged %v for a connection it handed over", lines)
	}
	lines := accessLines(t, logB, pathB)
	if len(lines) != 1 {
		t.Fatalf("B logged %d lines, want 1: %v", len(lines), lines)
	}
	want := map[string]any{"client": c.LocalAddr().String(), "listener": u.a.addr, "backend": "b0", "sniff": "other",
		"bytes_up": float64(len("question")), "bytes_down": float64(len("late answer")), "cause": "client_closed"}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("B's line: %s = %v, want %v (%v)", k, lines[0][k], v, lines[0])
		}
	}
}

func openAccessLog(t *testing.T) (*accesslog.Logger, string) {
	t.Helper()
	path := t.TempDir() + "/access.log"
	log, err := accesslog.Open(accesslog.Config{Dest: path, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	return log, path
}

// accessLines closes log and returns its lines, decoded.
func accessLines(t *testing.T, log *accesslog.Logger, path string) []map[string]any {
	t.Helper()
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestAdoptRefusesAMalformedBatch: a batch that says it holds more records than a batch may,
// or whose records do not decode, is an error; nothing is adopted, and the sender is told
// so (an ack of 0) at once.
func TestAdoptRefusesAMalformedBatch(t *testing.T) {
	s := startServer(t, testConfig())
	bad := sampleRecord()
	rec, _ := appendRecord(nil, &bad)
	rec[0] = recordVersion + 1
	for name, msg := range map[string][]byte{
		"too many records": binary.LittleEndian.AppendUint32(nil, batchConns+1),
		"no record":        binary.LittleEndian.AppendUint32(nil, 0),
		"unknown version":  append(binary.LittleEndian.AppendUint32(nil, 1), rec...),
	} {
		su, ru := unixPair(t)
		if _, err := su.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Adopt(ru); n != 0 || err == nil {
			t.Errorf("%s: adopted %d, %v; want 0 and an error", name, n, err)
		}
		var ack [ackSize]byte
		if _, err := io.ReadFull(su, ack[:]); err != nil || ack != [ackSize]byte{} {
			t.Errorf("%s: ack %v (%v), want 0", name, ack, err)
		}
	}
	if got := s.Stats().Active; got != 0 {
		t.Errorf("%d connections adopted from malformed batches", got)
	}
}

// TestHandoverRecordRoundTrip: a record decodes to what was encoded; one of another size or
// version, or with a field out of range, is an error.
func TestHandoverRecordRoundTrip(t *testing.T) {
	for _, r := range []moveRecord{
		{},
		sampleRecord(),
		{client: netip.MustParseAddrPort("[2001:db8::1]:443"), eof: [2]bool{false, true}, firstFIN: 2, moved: [2]uint64{1 << 40, 7}},
	} {
		b, err := appendRecord(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != recordSize {
			t.Fatalf("record of %d bytes, want %d", len(b), recordSize)
		}
		got, err := decodeRecord(b)
		if err != nil || got != r {
			t.Fatalf("decoded %+v (%v), want %+v", got, err, r)
		}
	}
	good, _ := appendRecord(nil, new(moveRecord))
	for name, b := range map[string][]byte{
		"short":    good[:recordSize-1],
		"version":  append([]byte{2}, good[1:]...),
		"flags":    append([]byte{recordVersion, 0x80}, good[2:]...),
		"firstFIN": append([]byte{recordVersion, 0, 3}, good[3:]...),
	} {
		if _, err := decodeRecord(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	long := sampleRecord()
	long.backend = string(make([]byte, nameSize))
	if _, err := appendRecord(nil, &long); !errors.Is(err, errNameTooLong) {
		t.Errorf("a 64-byte backend id: %v, want errNameTooLong", err)
	}
}

func sampleRecord() moveRecord {
	return moveRecord{
		eof: [2]bool{true, false}, stickied: true, firstFIN: 1, sniff: 3, sticky: 1,
		client: netip.MustParseAddrPort("192.0.2.7:51000"), start: 1_700_000_000_000_000_000, lastActive: 1_700_000_001_000_000_000,
		moved: [2]uint64{12345, 67890}, listener: "127.0.0.1:8080", pool: "api", backend: "web-1",
	}
}

// FuzzHandoverRecord: no batch makes the decoder panic, and what it accepts encodes back to
// a record that decodes the same. Its seeds are in testdata/fuzz/FuzzHandoverRecord.
func FuzzHandoverRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodeBatch(b)
		if err != nil {
			return
		}
		for i := range recs {
			again, err := appendRecord(nil, &recs[i])
			if err != nil {
				t.Fatalf("decoded %+v does not encode: %v", recs[i], err)
			}
			if got, err := decodeRecord(again); err != nil || got != recs[i] {
				t.Fatalf("%+v decodes as %+v (%v)", recs[i], got, err)
			}
		}
	})
}

// wireBytes is what moving n connections puts on the Unix socket: per batch its header, a
// record per connection, the SCM_RIGHTS message with two descriptors per connection, and
// the ack.
func wireBytes(n int) int {
	total := 0
	for ; n > 0; n -= batchConns {
		k := min(n, batchConns)
		total += batchHeader + k*recordSize + unix.CmsgSpace(2*k*4) + ackSize
	}
	return total
}

// BenchmarkHandover moves 1,000 held connections from one server to the other and back, a
// hand-over per iteration.
func BenchmarkHandover(b *testing.B) {
	const n = 1000
	backend := startBackend(b, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	ln := listenLoopback(b)
	servers := [2]*testServer{serveOn(b, testConfig(), ln, backend.addr())}
	clients := make([]net.Conn, 0, n)
	closeClients := func() {
		for _, c := range clients {
			c.Close()
		}
	}
	for range n {
		c, err := net.Dial("tcp", servers[0].addr)
		if err != nil {
			closeClients()
			b.Fatal(err)
		}
		clients = append(clients, c)
		c.Write([]byte("x")) // not HTTP: routed at once
	}
	waitFor(b, "every connection splicing", func() bool { return phasesOf(servers[0].Server)[splicing] == n })
	servers[1] = serveOn(b, testConfig(), sharedListener(b, servers[0].addr, ln), backend.addr())
	b.Cleanup(closeClients) // before the servers' Shutdown, which waits for them
	b.ResetTimer()
	moved := 0
	for i := range b.N {
		from, to := servers[i%2], servers[1-i%2]
		su, ru := unixPair(b)
		adopted := make(chan error, 1)
		go func() { _, err := to.Adopt(ru); adopted <- err }()
		m, kept, err := from.Handover(context.Background(), su)
		if err := errors.Join(err, <-adopted); err != nil || m != n || kept != 0 {
			b.Fatalf("moved %d, kept %d: %v", m, kept, err)
		}
		moved += m
	}
	b.ReportMetric(float64(moved)/b.Elapsed().Seconds(), "conns/s")
	b.ReportMetric(float64(wireBytes(n))/n, "bytes/conn")
	b.ReportMetric(0, "ns/op") // an op is a whole hand-over of n: conns/s says it better
}

// TestHandoverKeepsThePerAddressCount: a moved connection counts against its address's
// limit in B as it did in A: with two allowed and two moved, a third from the same address
// gets 429 from B; once a moved one closes, B takes a new one.
func TestHandoverKeepsThePerAddressCount(t *testing.T) {
	backend := startBackend(t, httpName("x"))
	cfg := testConfig()
	cfg.PerIP = admit.Config{MaxConns: 2}
	u := startUpgrade(t, cfg, backend.addr())
	clients, _ := keepAliveClients(t, u.a, 2)
	u.newB(t, cfg)
	if moved, _, err := u.handOver(t, context.Background()); err != nil || moved != 2 {
		t.Fatalf("Handover: moved %d, %v; want 2", moved, err)
	}
	c := dial(t, u.b.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 429 {
		t.Fatalf("a third connection after the move: %v, %v; want 429", resp, err)
	}
	clients[0].Close()
	waitFor(t, "the moved connection to close in B", func() bool { return u.b.Stats().Active == 1 })
	again := dial(t, u.b.addr)
	keepAlive(t, again, bufio.NewReader(again), "x")
	for _, c := range []*net.TCPConn{clients[1], again} {
		c.Close() // before B's Shutdown, which the test's cleanup runs first
	}
}
