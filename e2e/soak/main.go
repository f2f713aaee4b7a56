// Command soak drives the lb binary with a seeded random mix of clients for a set time while
// a chaos loop kills and restarts its backends and Redis and squeezes its descriptors, then
// reports what went through and fails on any request that failed for no reason the chaos
// gives, on bytes lost, changed or reordered, and on descriptors, goroutines or memory that do
// not come back once the load stops.
//
//	go run ./e2e/soak -duration 10m
//
// It needs nginx, socat and redis-server, and builds lb unless -lb names a binary.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

type config struct {
	duration time.Duration
	seed     uint64
	clients  int
	lb       string
	keep     bool
	// sessionTimeout is lb's --session-timeout. The soak checks that sessions stay put, not
	// how fast Redis answers: lb's 50 ms default, met on an idle machine, is not on a busy CI
	// runner, where sessions were then re-balanced with no fault to explain it.
	sessionTimeout time.Duration
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", time.Minute, "how long the load runs, chaos included (the warm-up and the settling come on top)")
	flag.Uint64Var(&cfg.seed, "seed", uint64(time.Now().UnixNano()), "seed of the client mix and the chaos")
	flag.IntVar(&cfg.clients, "clients", 24, "concurrent clients")
	flag.StringVar(&cfg.lb, "lb", "", "the lb binary (default: go build ./cmd/lb)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (logs of lb and the backends)")
	flag.DurationVar(&cfg.sessionTimeout, "session-timeout", time.Second, "lb's --session-timeout: the bound on each session store call")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	fmt.Println("soak: passed")
}

// rig is what the soak runs: two lb processes, each over its own backends.
type rig struct {
	httpLB, echoLB *proc
	nginx, echo    []*proc
	redis          *proc
}

func (r *rig) all() []*proc {
	return append(append([]*proc{r.redis}, append(r.nginx, r.echo...)...), r.httpLB, r.echoLB)
}

func run(cfg config) error {
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "lb-soak-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Println("soak: work directory", work)
	} else {
		defer os.RemoveAll(work)
	}
	if cfg.lb == "" {
		cfg.lb = filepath.Join(work, "lb")
		build := exec.Command("go", "build", "-o", cfg.lb, "./cmd/lb")
		build.Dir, build.Stdout, build.Stderr = repo, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/lb: %w", err)
		}
	}
	fmt.Printf("soak: seed %d, %d clients, %v\n", cfg.seed, cfg.clients, cfg.duration)

	r, err := newRig(work, repo, cfg.lb, cfg.sessionTimeout)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range r.all() {
			p.kill()
		}
	}()
	for _, p := range r.all() {
		if err := p.start(); err != nil {
			return err
		}
	}

	// Warm-up without chaos fills lb's pools (pipes, Redis connections); what it holds once
	// the warm-up's connections are gone is the baseline.
	warm := &ledger{kinds: map[string]*tally{}}
	load(cfg, r, warm, min(10*time.Second, cfg.duration/6), 0)
	if len(warm.failed) > 0 {
		return fmt.Errorf("%d operations failed in the warm-up, with no chaos: first: %s", len(warm.failed), describe(warm.failed[0]))
	}
	base := map[*proc]usage{}
	for _, p := range []*proc{r.httpLB, r.echoLB} {
		u, err := settle(p, func(u, first usage) bool { return u.fds <= first.fds }, 5*time.Second)
		if err != nil {
			return err
		}
		if u.goroutines, err = goroutinesOf(p); err != nil {
			return err
		}
		base[p] = u
	}

	l := &ledger{kinds: map[string]*tally{}}
	ch := newChaos(cfg.seed, r)
	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() { ch.run(stopChaos); close(chaosDone) }()
	load(cfg, r, l, cfg.duration, 1)
	close(stopChaos)
	<-chaosDone
	if err := ch.restore(); err != nil {
		return err
	}

	var problems []string
	for _, p := range []*proc{r.httpLB, r.echoLB} {
		if !p.alive() {
			problems = append(problems, p.name+" is not running: see "+filepath.Join(p.dir, "out.log"))
			continue
		}
		b := base[p]
		u, err := settle(p, func(u, _ usage) bool { return u.fds <= b.fds && u.rssKB <= 2*b.rssKB }, 60*time.Second)
		if err != nil {
			return err
		}
		if u.goroutines, err = goroutinesOf(p); err != nil {
			return err
		}
		fmt.Printf("soak: %s: baseline %v; after the load %v\n", p.name, b, u)
		if u.goroutines > b.goroutines {
			problems = append(problems, fmt.Sprintf("%s runs %d goroutines after the load, %d at the baseline", p.name, u.goroutines, b.goroutines))
		}
		if u.fds > b.fds {
			problems = append(problems, fmt.Sprintf("%s holds %d descriptors a minute after the load, %d at the baseline", p.name, u.fds, b.fds))
		}
		if u.rssKB > 2*b.rssKB {
			problems = append(problems, fmt.Sprintf("%s: RSS %d KB a minute after the load, over twice the baseline's %d KB", p.name, u.rssKB, b.rssKB))
		}
	}
	failures, excusedBy := judge(l, ch.events)
	report(l, ch.events, excusedBy)
	for _, o := range failures[:min(len(failures), 20)] {
		problems = append(problems, describe(o))
	}
	if len(failures) > 20 {
		problems = append(problems, fmt.Sprintf("... and %d more failed operations", len(failures)-20))
	}
	for _, p := range []*proc{r.httpLB, r.echoLB} {
		if ok, state := p.stopGently(syscall.SIGTERM, 15*time.Second); !ok || !state.Success() {
			problems = append(problems, fmt.Sprintf("%s did not exit 0 on SIGTERM: %v", p.name, state))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problems (seed %d):\n  %s", len(problems), cfg.seed, strings.Join(problems, "\n  "))
	}
	return nil
}

func newRig(work, repo, lb string, sessionTimeout time.Duration) (*rig, error) {
	r := &rig{}
	var err error
	if r.redis, err = redisProc(work); err != nil {
		return nil, err
	}
	for i := 1; i <= 2; i++ {
		n, err := nginxProc(work, repo, i)
		if err != nil {
			return nil, err
		}
		e, err := socatEcho(work, i)
		if err != nil {
			return nil, err
		}
		r.nginx, r.echo = append(r.nginx, n), append(r.echo, e)
	}
	r.httpLB, err = lbProc(work, lb, "lb-http", r.nginx, "--sticky-cookie", "lb_srv",
		"--session-cookie", "PHPSESSID", "--session-store", "redis://"+r.redis.addr+"/0",
		"--session-timeout", sessionTimeout.String())
	if err != nil {
		return nil, err
	}
	r.echoLB, err = lbProc(work, lb, "lb-echo", r.echo)
	return r, err
}

// load runs cfg.clients clients for d and waits for them to finish.
func load(cfg config, r *rig, l *ledger, d time.Duration, phase uint64) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cfg.clients {
		c := newClient(cfg.seed+phase<<32+uint64(i), r.httpLB.addr, r.echoLB.addr, l)
		wg.Go(func() { c.run(stop) })
	}
	time.Sleep(d) // the load's own duration
	close(stop)
	wg.Wait()
}

// settle waits up to d for a process's usage to meet ok (given the first reading too), and
// returns the last reading.
func settle(p *proc, ok func(u, first usage) bool, d time.Duration) (usage, error) {
	first, err := usageOf(p.pid())
	if err != nil {
		return first, err
	}
	deadline := time.Now().Add(d)
	u := first
	for !ok(u, first) && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond) // polling /proc
		if u, err = usageOf(p.pid()); err != nil {
			return u, err
		}
	}
	return u, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) && fileExists(filepath.Join(dir, "cmd", "lb")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run the soak inside the lb repository")
		}
		dir = parent
	}
}

func describe(o op) string {
	return fmt.Sprintf("%s via lb-%s at %v (%v): %v", o.kind, o.pool, o.start.Format("15:04:05.000"), o.end.Sub(o.start).Round(time.Millisecond), o.err)
}

func report(l *ledger, events []event, excusedBy map[string]int) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcount\tbytes\tfailed\texcused by chaos\t")
	var kinds []string
	for k := range l.kinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var ops, bytes, failed, excused int64
	for _, k := range kinds {
		t := l.kinds[k]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", k, t.ops, t.bytes, t.failed, t.excused)
		ops, bytes, failed, excused = ops+t.ops, bytes+t.bytes, failed+t.failed, excused+t.excused
	}
	fmt.Fprintf(tw, "all\t%d\t%d\t%d\t%d\t\n", ops, bytes, failed, excused)
	tw.Flush()
	counts := map[string]int{}
	for _, e := range events {
		counts[e.kind]++
	}
	var parts []string
	for k, n := range counts {
		parts = append(parts, fmt.Sprintf("%s: %d, excusing %d failed operations", k, n, excusedBy[k]))
	}
	sort.Strings(parts)
	fmt.Printf("faults injected: %d\n  %s\n", len(events), strings.Join(parts, "\n  "))
}
