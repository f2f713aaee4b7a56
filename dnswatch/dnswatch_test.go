package dnswatch

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A failing name is retried after FirstRetry, doubling up to Every; a success puts it back
// at Every. Its owner hears of the failure once and of the recovery once.
func TestRetryDoublesUpToEveryAndReportsOnce(t *testing.T) {
	w := New(Config{Every: 5 * time.Second})
	var fail bool
	var reports []error
	n := w.Watch(func(context.Context, *net.Resolver) error {
		if fail {
			return errors.New("no such host")
		}
		return nil
	}, func(err error) { reports = append(reports, err) })
	wait := func() time.Duration { return time.Until(n.due).Round(time.Second) }

	fail = true
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		w.look(context.Background(), n)
		if got := wait(); got != want {
			t.Fatalf("failure %d: next lookup in %v, want %v", i+1, got, want)
		}
	}
	select {
	case <-n.Settled():
	default:
		t.Fatal("not settled after its first lookup")
	}
	fail = false
	w.look(context.Background(), n)
	if got := wait(); got != 5*time.Second {
		t.Fatalf("after a success: next lookup in %v, want Every (5s)", got)
	}
	fail = true
	w.look(context.Background(), n)
	if got := wait(); got != time.Second {
		t.Fatalf("failing again: next lookup in %v, want FirstRetry again", got)
	}
	if len(reports) != 3 || reports[0] == nil || reports[1] != nil || reports[2] == nil {
		t.Fatalf("reports %v: want one failure, one recovery, one failure", reports)
	}
}

// A lookup cut short by its owner stopping says nothing of the name.
func TestStoppingIsNotAFailure(t *testing.T) {
	w := New(Config{})
	reported := false
	n := w.Watch(func(ctx context.Context, _ *net.Resolver) error {
		<-ctx.Done()
		return ctx.Err()
	}, func(error) { reported = true })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.LookupDue(ctx)
	if reported || n.failing || !n.due.IsZero() {
		t.Fatalf("after a lookup cut short: reported %v, failing %v, due %v; want none of it", reported, n.failing, n.due)
	}
}
