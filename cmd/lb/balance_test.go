package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"lb/health"
	"lb/ring"
)

func TestBalanceFlags(t *testing.T) {
	o, err := parse(t, "--balance", "leastconn", "--slow-start", "30s", "--health-http", "/health", "--health-expect-status", "200")
	if err != nil {
		t.Fatal(err)
	}
	if o.ring != (ring.Config{Balance: ring.LeastConn, SlowStart: 30 * time.Second}) {
		t.Errorf("ring config = %+v, want leastconn with 30s slow start", o.ring)
	}
	if o.health.HTTPPath != "/health" || o.health.Expect != (health.StatusRange{Min: 200, Max: 200}) {
		t.Errorf("health config = %+v, want GET /health wanting 200", o.health)
	}
	o, err = parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if o.ring != (ring.Config{}) || o.health.HTTPPath != "" || o.health.Expect != health.DefaultStatus {
		t.Errorf("defaults: ring %+v, health %+v; want round robin, TCP checks, 200-399", o.ring, o.health)
	}
	t.Setenv("LB_BALANCE", "p2c")
	t.Setenv("LB_HEALTH_HTTP", "/ready")
	if o, err = parse(t); err != nil || o.ring.Balance != ring.P2C || o.health.HTTPPath != "/ready" {
		t.Errorf("LB_BALANCE=p2c LB_HEALTH_HTTP=/ready: %+v %+v, %v", o.ring, o.health, err)
	}
}

func TestBadBalanceFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--balance", "foo"}, "--balance foo: want roundrobin, leastconn, p2c, source or random"},
		{[]string{"--slow-start", "-1s"}, "--slow-start -1s: want 0 (off) or a duration, e.g. 30s"},
		{[]string{"--health-http", "health"}, `--health-http "health": want a path starting with /`},
		{[]string{"--health-http", "/a b"}, `--health-http "/a b": want a path`},
		{[]string{"--health-expect-status", "399-200"}, "--health-expect-status 399-200: want a status or a range from 100 to 599"},
		{[]string{"--health-expect-status", "ok"}, "--health-expect-status ok: want"},
	} {
		_, err := parse(t, tc.args...)
		var bad badInput
		if !errors.As(err, &bad) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want bad input containing %q", tc.args, err, tc.want)
		}
	}
}
