package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"lb/internal/freeport"
)

// rawConn is one client connection through lb, spoken to by hand, so that every error
// (a reset above all) is seen as it happened: net/http's client would retry some of them.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReader(c)}, nil
}

// get sends GET / and returns the nginx backend that answered, and whether it will close.
func (r *rawConn) get(closeAfter bool) (n int, closing bool, err error) {
	r.c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: lb\r\n\r\n"
	if closeAfter {
		req = "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(r.c, req); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return 0, false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, err
	}
	n, _ = strconv.Atoi(resp.Header.Get("X-Backend"))
	if resp.StatusCode != 200 || string(body) != fmt.Sprintf("backend-%d\n", n) {
		return 0, false, fmt.Errorf("%s from backend %q: %q", resp.Status, resp.Header.Get("X-Backend"), body)
	}
	return n, resp.Close, nil
}

// connTo dials lb until a connection lands on backend want, and returns it open.
func connTo(t *testing.T, addr string, want int) *rawConn {
	t.Helper()
	for range 200 {
		rc, err := dialRaw(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, _, err := rc.get(false)
		if err != nil {
			t.Fatal(err)
		}
		if n == want {
			t.Cleanup(func() { rc.c.Close() })
			return rc
		}
		rc.c.Close()
	}
	t.Fatalf("200 connections and none on backend %d", want)
	return nil
}

// requestLog is what the load saw.
type requestLog struct {
	mu       sync.Mutex
	fresh    []freshRequest // one request per connection: when it ran and where it went
	failures []string
	resets   atomic.Int64
	ok       atomic.Int64
}

type freshRequest struct {
	start, end time.Time
	backend    int
}

func (l *requestLog) fail(err error) {
	if errors.Is(err, syscall.ECONNRESET) {
		l.resets.Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) < 20 {
		l.failures = append(l.failures, err.Error())
	} else {
		l.failures = append(l.failures[:20], "...")
	}
}

func (l *requestLog) freshDone() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.fresh)
}

// reloadWindow is the time between a change's return and the next change's start, and the
// backends new connections may reach in it.
type reloadWindow struct {
	from, to time.Time
	allowed  []int
	what     string
}

// TestReloadUnderLoad makes 20 reloads (SIGHUP) that add, remove and re-weight backends, and
// one drain through the admin API, under a steady load of keep-alive clients and clients
// that open a connection per request. Not one request fails and no connection is reset; a
// removed or drained backend gets no new connection once the change has returned; and
// connections open on a removed and on a drained backend go on being served.
func TestReloadUnderLoad(t *testing.T) {
	slow(t, "20 reloads under load")
	ng := startNginx(t, 5)
	line := func(spec string) string {
		n, w, _ := strings.Cut(spec, ":")
		i, _ := strconv.Atoi(n)
		l := fmt.Sprintf("%s id=n%d", ng[i-1].Addr, i)
		if w != "" {
			l += " weight=" + w
		}
		return l
	}
	file := func(specs ...string) []string {
		lines := make([]string, len(specs))
		for i, s := range specs {
			lines[i] = line(s)
		}
		return lines
	}
	servers := writeServersFile(t, file("1", "2", "3")...)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--admin-listen", adminAddr,
		"--health-interval", "300ms")

	heldRemoved := connTo(t, lb.Addr, 2) // n2 leaves at the first reload
	heldDrained := connTo(t, lb.Addr, 1) // n1 is drained half-way and stays so

	var log requestLog
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	const maxPerClient = 50_000 // bounds the load whatever happens to the reloads
	for range 2 {
		wg.Go(func() { // keep-alive: many requests a connection
			for i := 0; i < maxPerClient && !stopped(); {
				rc, err := dialRaw(lb.Addr)
				if err != nil {
					log.fail(err)
					return
				}
				for ; i < maxPerClient && !stopped(); i++ {
					_, closing, err := rc.get(false)
					if err != nil {
						log.fail(err)
						break
					}
					log.ok.Add(1)
					if closing {
						break
					}
				}
				rc.c.Close()
			}
		})
		wg.Go(func() { // a new connection per request
			for i := 0; i < maxPerClient && !stopped(); i++ {
				start := time.Now()
				rc, err := dialRaw(lb.Addr)
				if err != nil {
					log.fail(err)
					continue
				}
				n, _, err := rc.get(true)
				rc.c.Close()
				if err != nil {
					log.fail(err)
					continue
				}
				log.ok.Add(1)
				log.mu.Lock()
				log.fresh = append(log.fresh, freshRequest{start: start, end: time.Now(), backend: n})
				log.mu.Unlock()
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	// Each step is a servers file (backend number[:weight]); after step 10 (index 9), n1 is
	// drained through the API, and stays drained: a reload keeps the state of a backend it keeps.
	steps := [][]string{
		{"1", "3", "4"}, {"1", "3:2", "4"}, {"1", "3:2", "4", "5"}, {"1", "4", "5"}, {"1", "2", "4", "5:3"},
		{"1", "2", "5:3"}, {"1", "2", "3", "5"}, {"1:2", "2", "3", "5"}, {"1:2", "3", "4"}, {"1", "3", "4", "5"},
		{"1", "2", "4", "5"}, {"1", "2:3", "4"}, {"1", "2:3", "3", "4"}, {"1", "3", "5"}, {"1", "2", "3", "5:2"},
		{"1", "4", "5:2"}, {"1", "2", "4"}, {"1", "2", "3", "4", "5"}, {"1", "3:4", "5"}, {"1", "2", "3"},
	}
	drained := false
	var windows []reloadWindow
	change := func(what string, allowed []int, do func()) {
		t.Helper()
		if len(windows) > 0 {
			windows[len(windows)-1].to = time.Now()
		}
		do()
		windows = append(windows, reloadWindow{from: time.Now(), allowed: allowed, what: what})
		// Let some new connections through before the next change.
		before := log.freshDone()
		deadline := time.Now().Add(10 * time.Second)
		for log.freshDone() < before+15 {
			if time.Now().After(deadline) {
				t.Fatalf("after %s: no new connection got through in 10s (ok %d, failures %v)", what, log.ok.Load(), log.failures)
			}
			time.Sleep(2 * time.Millisecond) // pacing the load between steps, not waiting for a condition of lb's
		}
	}
	allowedOf := func(step []string) []int {
		var out []int
		for _, s := range step {
			n, _ := strconv.Atoi(strings.Split(s, ":")[0])
			if !(drained && n == 1) {
				out = append(out, n)
			}
		}
		return out
	}
	for i, step := range steps {
		change(fmt.Sprintf("reload %d %v", i+1, step), allowedOf(step), func() {
			if err := os.WriteFile(servers, []byte(strings.Join(file(step...), "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			mark := lb.log.len()
			lb.signal(t, syscall.SIGHUP)
			if e, ok := lb.log.waitFor(mark, startDeadline, func(e logEntry) bool {
				return strings.HasPrefix(e.Message, "config ")
			}); !ok || e.Message != "config reloaded" {
				t.Fatalf("reload %d: %q (found %v), want \"config reloaded\"", i+1, e.raw, ok)
			}
		})
		if i == 0 {
			if n, _, err := heldRemoved.get(false); err != nil || n != 2 {
				t.Errorf("a connection open on n2 when it was removed: backend %d, %v; want it still served by n2", n, err)
			}
		}
		if i == 9 {
			drained = true
			change("drain n1", allowedOf(step), func() {
				res, err := http.Post("http://"+adminAddr+"/backends/n1/drain", "", nil)
				if err != nil {
					t.Fatal(err)
				}
				var b struct{ State string }
				json.NewDecoder(res.Body).Decode(&b)
				res.Body.Close()
				if res.StatusCode != 200 || b.State != "draining" {
					t.Fatalf("POST /backends/n1/drain: %s, state %q", res.Status, b.State)
				}
			})
		}
	}
	windows[len(windows)-1].to = time.Now()
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close

	if n, _, err := heldDrained.get(false); err != nil || n != 1 {
		t.Errorf("a connection open on n1 when it was drained: backend %d, %v; want it still served by n1", n, err)
	}
	if n, _, err := heldRemoved.get(true); err != nil || n != 2 {
		t.Errorf("the connection open on n2 since its removal, 20 reloads later: backend %d, %v", n, err)
	}

	log.mu.Lock()
	defer log.mu.Unlock()
	t.Logf("%d requests, %d on fresh connections, over %d changes", log.ok.Load(), len(log.fresh), len(windows))
	if len(log.failures) > 0 || log.resets.Load() > 0 {
		t.Errorf("%d failed requests (%d resets): %v", len(log.failures), log.resets.Load(), log.failures)
	}
	checked := 0
	for _, r := range log.fresh {
		for _, w := range windows {
			if r.start.After(w.from) && r.end.Before(w.to) {
				checked++
				if !slices.Contains(w.allowed, r.backend) {
					t.Errorf("a connection made after %s returned went to n%d; allowed: %v", w.what, r.backend, w.allowed)
				}
			}
		}
	}
	if checked < 15*len(windows)/2 {
		t.Errorf("only %d fresh connections fell inside a window; the check says little", checked)
	}
	var list []struct{ ID, State string }
	res, err := http.Get("http://" + adminAddr + "/backends")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(res.Body).Decode(&list)
	res.Body.Close()
	slices.SortFunc(list, func(a, b struct{ ID, State string }) int { return strings.Compare(a.ID, b.ID) })
	if got := fmt.Sprint(list); got != "[{n1 draining} {n2 up} {n3 up}]" {
		t.Errorf("GET /backends after the last reload = %s; want n1 still draining, n2 and n3 up", got)
	}
}
