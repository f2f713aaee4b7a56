package dnswatch

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A failing name is retried after FirstRetry, doubling up to Every; a success puts it back
// at Every. Its owner is told of the failure once and of the recovery once.
func TestRetryDoublesUpToEveryAndChangesOnce(t *testing.T) {
	w := New[int](Config{Every: 5 * time.Second})
	var fail bool
	var changes []error
	n := w.Watch(func(context.Context, *net.Resolver) (int, error) {
		if fail {
			return 0, errors.New("no such host")
		}
		return 1, nil
	}, func(_ int, err error, changed bool) {
		if changed {
			changes = append(changes, err)
		}
	})
	wait := func() time.Duration { return time.Until(n.due).Round(time.Second) }

	fail = true
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		w.look(context.Background(), n)
		if got := wait(); got != want {
			t.Fatalf("failure %d: next lookup in %v, want %v", i+1, got, want)
		}
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
	if len(changes) != 3 || changes[0] == nil || changes[1] != nil || changes[2] == nil {
		t.Fatalf("changes %v: want one failure, one recovery, one failure", changes)
	}
}

// A lookup cut short by its owner stopping says nothing of the name.
func TestStoppingIsNotAFailure(t *testing.T) {
	w := New[int](Config{})
	answered := false
	n := w.Watch(func(ctx context.Context, _ *net.Resolver) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}, func(int, error, bool) { answered = true })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.LookupDue(ctx)
	if answered || n.failing || !n.due.IsZero() || w.Busy(n) {
		t.Fatalf("after a lookup cut short: answered %v, failing %v, due %v, busy %v; want none of it", answered, n.failing, n.due, w.Busy(n))
	}
}
