package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// event is one fault the chaos loop injected, from start until it was undone.
type event struct {
	kind       string // "kill backend", "kill redis", "squeeze fds"
	pool       string // the lb it hit: "http" or "echo"
	target     string
	start, end time.Time
	// killed is when the killed process had exited (was reaped): until then its listening
	// socket may still take a connection, which its exit then resets. Zero for other faults.
	killed time.Time
}

// chaos injects one fault at a time, so every pool always has a backend up.
type chaos struct {
	rng    *rand.Rand
	r      *rig
	events []event
	err    error
}

func newChaos(seed uint64, r *rig) *chaos {
	return &chaos{rng: rand.New(rand.NewPCG(seed, 7)), r: r}
}

// pause waits a random time in [lo, hi), or until stop; false if stopped.
func (c *chaos) pause(stop <-chan struct{}, lo, hi time.Duration) bool {
	t := time.NewTimer(lo + time.Duration(c.rng.Int64N(int64(hi-lo))))
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

func (c *chaos) run(stop <-chan struct{}) {
	for c.pause(stop, time.Second, 3*time.Second) && c.err == nil {
		var e event
		switch c.rng.IntN(5) {
		case 0:
			e = c.kill("kill backend", "http", c.r.nginx[c.rng.IntN(2)])
		case 1:
			e = c.kill("kill backend", "echo", c.r.echo[c.rng.IntN(2)])
		case 2:
			e = c.kill("kill redis", "http", c.r.redis)
		case 3:
			e = c.squeeze("http", c.r.httpLB)
		default:
			e = c.squeeze("echo", c.r.echoLB)
		}
		c.events = append(c.events, e)
	}
}

// kill kills p and starts it again on the same port 0.3-1.5 s later, then lets lb's health
// bring it back (upGrace) before the next fault: killing the other backend of a pool
// meanwhile would leave lb none up, a 503 that is the chaos's doing.
func (c *chaos) kill(kind, pool string, p *proc) event {
	e := event{kind: kind, pool: pool, target: p.name, start: time.Now()}
	p.kill()
	e.killed = time.Now()
	time.Sleep(300*time.Millisecond + time.Duration(c.rng.Int64N(int64(1200*time.Millisecond)))) // the outage
	if err := p.start(); err != nil {
		c.err = err
	}
	e.end = time.Now()
	time.Sleep(upGrace) // health's rise
	return e
}

// squeeze lowers an lb's open-files limit to a few above what it holds, for 0.5-1.5 s: less
// than lb's connect timeout (2 s), the longest a client waits for a descriptor.
func (c *chaos) squeeze(pool string, lb *proc) event {
	e := event{kind: "squeeze fds", pool: pool, target: lb.name, start: time.Now()}
	pid := lb.pid()
	hard, err := nofile(pid)
	if err != nil {
		c.err = err
		return e
	}
	u, err := usageOf(pid)
	if err == nil {
		err = setNofile(pid, uint64(u.fds+8))
	}
	if err != nil {
		c.err = fmt.Errorf("squeeze %s: %w", lb.name, err)
		return e
	}
	time.Sleep(500*time.Millisecond + time.Duration(c.rng.Int64N(int64(time.Second)))) // the shortage
	if err := setNofile(pid, hard); err != nil {
		c.err = err
	}
	e.end = time.Now()
	return e
}

// restore checks that the chaos left everything as it found it.
func (c *chaos) restore() error {
	if c.err != nil {
		return fmt.Errorf("chaos: %w", c.err)
	}
	for _, p := range c.r.all() {
		if !p.alive() {
			return fmt.Errorf("%s is not running after the chaos", p.name)
		}
	}
	return nil
}

// Slack around a fault: an operation in flight when a backend is killed may be cut, until
// the process has exited and a moment after (killSlack covers the kill taking effect); a
// sticky or session series may be re-balanced while its backend, or Redis, is down and
// until health has brought it back (upGrace).
const (
	killSlack = 100 * time.Millisecond
	upGrace   = 4 * time.Second // health: two good probes a second apart, and the probe in progress
)

// excused reports whether a fault explains why o failed.
func excused(o op, e event) bool {
	overlaps := func(from, to time.Time) bool { return !o.start.After(to) && !o.end.Before(from) }
	stickiness := o.kind == "sticky" || o.kind == "session"
	switch {
	case e.pool != o.pool:
		return false
	case e.kind == "kill backend":
		return overlaps(e.start, e.killed.Add(killSlack)) || stickiness && overlaps(e.start, e.end.Add(upGrace))
	case e.kind == "kill redis":
		return o.kind == "session" && overlaps(e.start, e.end.Add(upGrace))
	case e.kind == "squeeze fds":
		// lb waits for descriptors rather than fail a client: only its Redis calls, which
		// need a socket now, may fail, and with them a session's stickiness.
		return o.kind == "session" && overlaps(e.start, e.end.Add(upGrace))
	}
	return false
}

// judge sorts the failed operations into those a fault explains, counted by the fault's kind,
// and the others, which it returns.
func judge(l *ledger, events []event) (unexcused []op, by map[string]int) {
	by = map[string]int{}
	for _, o := range l.failed {
		t := l.kinds[o.kind]
		t.failed++
		i := slices.IndexFunc(events, func(e event) bool { return excused(o, e) })
		if i < 0 {
			unexcused = append(unexcused, o)
			continue
		}
		t.excused++
		by[events[i].kind]++
	}
	return unexcused, by
}
