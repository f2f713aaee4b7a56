package health

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"lb/internal/fdtest"
	"lb/internal/logtest"
	"lb/ring"
)

// TestInitManyBackends probes 1,000 backends that refuse (one closed port on 1,000 loopback
// addresses) and one that answers: it names the first few of each state, then the counts.
func TestInitManyBackends(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(refusedAddr(t))
	bs := []ring.Backend{{ID: "live", Addr: live.addr}}
	for i := range 1000 {
		bs = append(bs, ring.Backend{ID: strconv.Itoa(i), Addr: fmt.Sprintf("127.0.%d.%d:%s", 1+i/250, 1+i%250, port)})
	}
	r, err := ring.New(bs...)
	if err != nil {
		t.Fatal(err)
	}
	logs, log := logtest.New()
	NewProber(r, Config{Timeout: 5 * time.Second}, log).Init(context.Background())

	up := 0
	for _, s := range r.Snapshot() {
		if s.Up {
			up++
		}
	}
	if up != 1 {
		t.Errorf("%d backends up after Init, want the one that answers", up)
	}
	if n := logs.Count("backend down"); n != initLines {
		t.Errorf("logged %d backend down lines, want the first %d", n, initLines)
	}
	last := logs.All()[len(logs.All())-1]
	if last["message"] != "backends probed" || last["up"] != 1.0 || last["down"] != 1000.0 {
		t.Errorf("last line = %v, want backends probed up=1 down=1000", last)
	}
}

func TestInitCancelled(t *testing.T) {
	r := newRing(t, refusedAddr(t))
	logs, log := logtest.New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	NewProber(r, Config{}, log).Init(ctx)
	if !isUp(t, r, "a") || len(logs.All()) != 0 {
		t.Errorf("Init after its context ended: a up=%v, logged %v; want the ring untouched and nothing logged", isUp(t, r, "a"), logs)
	}
}

// TestOwnShortageIsNotTheBackends: a probe that cannot even open a socket (EMFILE) says
// nothing about the backend: it does not count toward Fall, and is logged once per episode.
func TestOwnShortageIsNotTheBackends(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	logs, log := logtest.New()
	p := NewProber(r, Config{Fall: 1}, log)
	emfile := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	for range 3 {
		p.observe("a", emfile)
	}
	if !isUp(t, r, "a") {
		t.Fatal("EMFILE took the backend down")
	}
	const line = "cannot probe: lb is out of descriptors or memory; backends keep their state"
	if n := logs.Count(line); n != 1 {
		t.Errorf("logged the shortage %d times in one episode, want once", n)
	}
	p.observe("a", nil) // a probe is made again: the episode is over
	p.observe("a", emfile)
	if n := logs.Count(line); n != 2 {
		t.Errorf("logged the shortage %d times over two episodes, want twice", n)
	}
	p.observe("a", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	if isUp(t, r, "a") {
		t.Error("a refused connection with Fall 1 left the backend up")
	}
}

// TestInitOutOfDescriptors: probes that cannot get a socket leave their backends up, and the
// summary says how many were not probed and why.
func TestInitOutOfDescriptors(t *testing.T) {
	r := newRing(t, listen(t, "127.0.0.1:0").addr, listen(t, "127.0.0.1:0").addr, listen(t, "127.0.0.1:0").addr)
	logs, log := logtest.New()
	p := NewProber(r, Config{Timeout: 5 * time.Second}, log)
	restore := fdtest.Squeeze(t)
	p.Init(context.Background())
	restore()
	for _, id := range []string{"a", "b", "c"} {
		if !isUp(t, r, id) {
			t.Errorf("%s is down after a probe that could not be made", id)
		}
	}
	last := logs.All()[len(logs.All())-1]
	if last["message"] != "backends probed" || last["level"] != "warn" || last["not_probed"] != 3.0 || last["up"] != 0.0 || last["down"] != 0.0 {
		t.Errorf("last line = %v, want a warning: backends probed, 3 not probed", last)
	}
}

// TestInitNamesTheFirstFewUp: of six backends up, the first five are named.
func TestInitNamesTheFirstFewUp(t *testing.T) {
	var addrs []string
	for range initLines + 1 {
		addrs = append(addrs, listen(t, "127.0.0.1:0").addr)
	}
	logs, log := logtest.New()
	NewProber(newRing(t, addrs...), Config{Timeout: 5 * time.Second}, log).Init(context.Background())
	if n := logs.Count("backend up"); n != initLines {
		t.Errorf("named %d backends up, want the first %d", n, initLines)
	}
}
