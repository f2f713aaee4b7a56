package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"lb/health"
)

func TestBalanceFlags(t *testing.T) {
	o, err := parse(t, "--balance", "leastconn", "--slow-start", "30s", "--health-http", "/health", "--health-expect-status", "200")
	if err != nil {
		t.Fatal(err)
	}
	if d := o.Source.Defaults; d.Balance != "leastconn" || o.SlowStart != 30*time.Second {
		t.Errorf("balance %q, slow start %s; want leastconn with 30s slow start", d.Balance, o.SlowStart)
	}
	if d := o.Source.Defaults; d.Health.HTTPPath != "/health" || o.Expect != (health.StatusRange{Min: 200, Max: 200}) {
		t.Errorf("health %+v, expect %v; want GET /health wanting 200", d.Health, o.Expect)
	}
	o, err = parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if d := o.Source.Defaults; d.Balance != "roundrobin" || o.SlowStart != 0 || d.Health.HTTPPath != "" || o.Expect != health.DefaultStatus {
		t.Errorf("defaults: balance %q, slow start %s, health %+v, expect %v; want round robin, TCP checks, 200-399", d.Balance, o.SlowStart, d.Health, o.Expect)
	}
	t.Setenv("LB_BALANCE", "p2c")
	t.Setenv("LB_HEALTH_HTTP", "/ready")
	if o, err = parse(t); err != nil || o.Source.Defaults.Balance != "p2c" || o.Source.Defaults.Health.HTTPPath != "/ready" {
		t.Errorf("LB_BALANCE=p2c LB_HEALTH_HTTP=/ready: %+v, %v", o.Source.Defaults, err)
	}
}

func TestBadBalanceFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--balance", "foo"}, "--balance foo: want roundrobin, leastconn, p2c, source or random"},
		{[]string{"--slow-start", "-1s"}, "--slow-start -1s: want 0 (off) or a duration, e.g. 30s"},
		{[]string{"--health-http", "health"}, `--health-http health: want a path to GET, beginning with /`},
		{[]string{"--health-http", "/a b"}, `--health-http /a b: want a path to GET`},
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
