package health

import (
	"context"
	"errors"
	"net"
	"reflect"
	"syscall"
	"testing"
	"time"

	"lb/internal/logtest"
	"lb/ring"
)

// waitFor bounds every wait on a condition; generous so that a loaded CI machine passes.
const waitFor = 5 * time.Second

// backend is a TCP listener on 127.0.0.1 that accepts and closes connections.
type backend struct {
	t    *testing.T
	addr string
	ln   net.Listener
	done chan struct{} // closed when the accept loop has ended
}

func listen(t *testing.T, addr string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{t: t, addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *backend) accept() {
	defer close(b.done)
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// close stops the listener and waits for its accept loop; safe to call twice.
func (b *backend) close() {
	b.ln.Close()
	<-b.done
}

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newRing(t *testing.T, addrs ...string) *ring.Ring {
	t.Helper()
	var bs []ring.Backend
	for i, a := range addrs {
		bs = append(bs, ring.Backend{ID: string(rune('a' + i)), Addr: a})
	}
	r, err := ring.New(bs...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func isUp(t *testing.T, r *ring.Ring, id string) bool {
	t.Helper()
	_, up, ok := r.Lookup(id)
	if !ok {
		t.Fatalf("backend %q not in the ring", id)
	}
	return up
}

// TestNewProberDefaults checks that only fields below 1 take the defaults: 1 is a valid
// Rise, Fall, and the smallest Interval and Timeout are kept as given.
func TestNewProberDefaults(t *testing.T) {
	defaults := Config{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Expect: DefaultStatus}
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, defaults},
		{"negative", Config{Interval: -1, Timeout: -1, Rise: -1, Fall: -1}, defaults},
		{"smallest", Config{Interval: 1, Timeout: 1, Rise: 1, Fall: 1}, Config{Interval: 1, Timeout: 1, Rise: 1, Fall: 1, Expect: DefaultStatus}},
		{"given", Config{Interval: time.Minute, Timeout: 3 * time.Second, Rise: 5, Fall: 7}, Config{Interval: time.Minute, Timeout: 3 * time.Second, Rise: 5, Fall: 7, Expect: DefaultStatus}},
		{"expect", Config{Expect: StatusRange{200, 200}}, Config{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Expect: StatusRange{200, 200}}},
	}
	r := newRing(t, "127.0.0.1:1")
	_, log := logtest.New()
	for _, tt := range tests {
		if got := NewProber(r, tt.in, log).cfg; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: NewProber(%+v).cfg = %+v, want %+v", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestInit(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr, refusedAddr(t))
	logs, log := logtest.New()
	NewProber(r, Config{Timeout: time.Second}, log).Init(context.Background())

	if !isUp(t, r, "a") || isUp(t, r, "b") {
		t.Errorf("after Init: a up=%v, b up=%v; want a up, b down", isUp(t, r, "a"), isUp(t, r, "b"))
	}
	if len(logs.All()) != 3 {
		t.Fatalf("logged %d lines, want one per backend and the counts: %v", len(logs.All()), logs)
	}
	if m := logs.All()[0]; m["message"] != "backend up" || m["level"] != "info" || m["id"] != "a" {
		t.Errorf("line for a = %v, want info backend up", m)
	}
	if m := logs.All()[1]; m["message"] != "backend down" || m["level"] != "warn" || m["error"] == nil {
		t.Errorf("line for b = %v, want warn backend down with the error", m)
	}
	if m := logs.All()[2]; m["message"] != "backends probed" || m["level"] != "info" || m["up"] != 1.0 || m["down"] != 1.0 {
		t.Errorf("last line = %v, want backends probed up=1 down=1", m)
	}
}

// TestRiseFall counts rounds exactly: down after Fall failed ones, up after Rise good ones.
func TestRiseFall(t *testing.T) {
	const rise, fall = 2, 3
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	logs, log := logtest.New()
	p := NewProber(r, Config{Timeout: time.Second, Rise: rise, Fall: fall}, log)
	p.Init(context.Background())
	ctx := context.Background()

	live.close()
	for i := 1; i < fall; i++ {
		p.round(ctx)
		if !isUp(t, r, "a") {
			t.Fatalf("down after %d failed rounds, want %d", i, fall)
		}
	}
	p.round(ctx)
	if isUp(t, r, "a") {
		t.Fatalf("still up after %d failed rounds", fall)
	}
	p.round(ctx) // more failures: no more lines
	if n := logs.Count("backend down"); n != 1 {
		t.Errorf("logged backend down %d times, want once", n)
	}

	listen(t, live.addr)
	for i := 1; i < rise; i++ {
		p.round(ctx)
		if isUp(t, r, "a") {
			t.Fatalf("up after %d good rounds, want %d", i, rise)
		}
	}
	p.round(ctx)
	if !isUp(t, r, "a") {
		t.Fatalf("still down after %d good rounds", rise)
	}
	p.round(ctx)
	if n := logs.Count("backend up"); n != 2 { // Init's line and the transition's
		t.Errorf("logged backend up %d times, want twice", n)
	}
}

func TestRun(t *testing.T) {
	const rise, fall = 2, 3
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	logs, log := logtest.New()
	p := NewProber(r, Config{Interval: 5 * time.Millisecond, Timeout: time.Second, Rise: rise, Fall: fall}, log)
	p.Init(context.Background())
	logs.Await(t, "backend up", waitFor)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Fatal("Run did not return after cancel")
		}
	}()

	live.close()
	if m := logs.Await(t, "backend down", waitFor); m["failures"] != float64(fall) || m["addr"] != live.addr || m["error"] == nil {
		t.Errorf("down line = %v, want %d failures, the address and the error", m, fall)
	}
	if isUp(t, r, "a") {
		t.Error("logged down but still up in the ring")
	}
	listen(t, live.addr)
	if m := logs.Await(t, "backend up", waitFor); m["successes"] != float64(rise) {
		t.Errorf("up line = %v, want %d successes", m, rise)
	}
	if !isUp(t, r, "a") {
		t.Error("logged up but still down in the ring")
	}
	if n := logs.Count("backend down"); n != 1 {
		t.Errorf("logged backend down %d times, want once", n)
	}
}

// TestRunFollowsRing checks that each round reads the ring again.
func TestRunFollowsRing(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	_, log := logtest.New()
	p := NewProber(r, Config{Timeout: time.Second, Fall: 1}, log)
	p.Init(context.Background())

	if err := r.Add(ring.Backend{ID: "dead", Addr: refusedAddr(t)}); err != nil {
		t.Fatal(err)
	}
	p.round(context.Background())
	if isUp(t, r, "dead") {
		t.Error("added backend not probed")
	}
	r.Remove("dead")
	p.round(context.Background())
	if _, ok := p.counts["dead"]; ok || len(p.counts) != 1 {
		t.Errorf("counts = %v, want the removed backend forgotten", p.counts)
	}
}

// TestRunCancelled checks that dials failed by our own cancellation count against nobody.
func TestRunCancelled(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	_, log := logtest.New()
	p := NewProber(r, Config{Timeout: time.Second, Fall: 1}, log)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.round(ctx)
	if !isUp(t, r, "a") {
		t.Error("a cancelled round took a backend down")
	}
}

func TestReportFailure(t *testing.T) {
	const fall = 3
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	logs, log := logtest.New()
	p := NewProber(r, Config{Timeout: time.Second, Fall: fall}, log)
	p.Init(context.Background())

	p.ReportFailure("a")
	p.ReportFailure("a")
	p.round(context.Background()) // a good probe ends the streak
	for i := 1; i < fall; i++ {
		p.ReportFailure("a")
	}
	if !isUp(t, r, "a") {
		t.Fatal("down before Fall consecutive failures")
	}
	p.ReportFailure("a")
	if isUp(t, r, "a") {
		t.Fatal("still up after Fall reported failures")
	}
	p.ReportFailure("unknown") // ignored
	if n := logs.Count("backend down"); n != 1 {
		t.Errorf("logged backend down %d times, want once", n)
	}
}

func TestReportFailureNoAllocs(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	_, log := logtest.New()
	p := NewProber(r, Config{Timeout: time.Second, Fall: 1 << 30}, log)
	p.Init(context.Background())
	if n := testing.AllocsPerRun(100, func() { p.ReportFailure("a") }); n != 0 {
		t.Errorf("ReportFailure: %v allocs, want 0", n)
	}
}

func TestProbeAll(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	refused := refusedAddr(t)
	timeout := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	tests := []struct {
		name    string
		addr    string
		timeout time.Duration
		up      bool
		errIs   func(error) bool
	}{
		{"live", live.addr, time.Second, true, func(err error) bool { return err == nil }},
		{"refused", refused, time.Second, false, func(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }},
		{"timeout", live.addr, time.Nanosecond, false, timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := ring.Backend{ID: tt.name, Addr: tt.addr}
			res := ProbeAll(context.Background(), []ring.Backend{b}, tt.timeout)
			if len(res) != 1 || res[0].Backend != b || res[0].Up != tt.up || !tt.errIs(res[0].Err) {
				t.Errorf("ProbeAll = %+v, want up=%v and a matching error", res, tt.up)
			}
		})
	}

	// Several at once come back in input order.
	bs := []ring.Backend{{ID: "1", Addr: refused}, {ID: "2", Addr: live.addr}, {ID: "3", Addr: refused}}
	res := ProbeAll(context.Background(), bs, time.Second)
	for i, r := range res {
		if r.Backend != bs[i] || r.Up != (i == 1) {
			t.Errorf("result %d = %+v, want %v up=%v", i, r, bs[i], i == 1)
		}
	}
}

// TestLastAndAdmit checks that the latest probe of each backend is kept, that Admit brings up
// at once an added backend that answers and keeps down one that does not, and that a removed
// backend's probe is forgotten.
func TestLastAndAdmit(t *testing.T) {
	live := listen(t, "127.0.0.1:0")
	r := newRing(t, live.addr)
	_, log := logtest.New()
	p := NewProber(r, Config{Timeout: time.Second, Rise: 5}, log)
	if _, ok := p.Last("a"); ok {
		t.Error("Last before any probe reports one")
	}
	before := time.Now()
	p.Init(context.Background())
	if pr, ok := p.Last("a"); !ok || pr.Err != nil || pr.At.Before(before) || pr.Latency <= 0 {
		t.Errorf("Last(a) = %+v, %v; want a good probe made after %v", pr, ok, before)
	}

	second := listen(t, "127.0.0.1:0")
	added := []ring.Backend{{ID: "new", Addr: second.addr}, {ID: "dead", Addr: refusedAddr(t)}}
	for _, b := range added {
		if err := r.Add(b); err != nil {
			t.Fatal(err)
		}
		r.SetUp(b.ID, false)
	}
	p.Admit(context.Background(), added)
	if !isUp(t, r, "new") || isUp(t, r, "dead") {
		t.Errorf("after Admit: new up=%v dead up=%v; want new up at its first good probe (not after Rise=5), dead down", isUp(t, r, "new"), isUp(t, r, "dead"))
	}
	if pr, ok := p.Last("dead"); !ok || pr.Err == nil {
		t.Errorf("Last(dead) = %+v, %v; want the failed probe", pr, ok)
	}

	r.Remove("dead")
	p.round(context.Background())
	if _, ok := p.Last("dead"); ok {
		t.Error("the removed backend's last probe is still kept")
	}
}
