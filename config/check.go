package config

import (
	"strings"
	"time"

	"lb/ring"
	"lb/serversfile"
)

// Invalid is a pool setting out of its range: its lb.yaml key ("connect_timeout",
// "health.interval"), and what is allowed.
type Invalid struct{ Key, Want string }

// What each pool setting allows, as its errors say it: one rule per setting, for lb.yaml's
// keys and lb serve's flags alike.
const (
	wantCookie    = "a cookie name: letters, digits and !#$%&'*+-.^_`|~ (or \"\" for none)"
	wantOneLine   = "one line, e.g. Path=/; HttpOnly; SameSite=Lax"
	wantProxy     = "v1, v2 or off"
	wantPositive  = "a duration above 0, e.g. 2s"
	wantIdle      = "0 (never) or a duration, e.g. 5m"
	wantCount     = "a count from 1 to 1000"
	wantCheckPath = "a path to GET, beginning with /, e.g. /healthz"
)

// Check reports the first setting of p out of its range, nil when all are allowed. Name,
// servers and discover lines are checked where they are read.
func (p Pool) Check() *Invalid {
	h := p.Health
	return First(
		Bad(!validBalance(p.Balance), "balance", ring.BalanceNames),
		Bad(p.StickyCookie != "" && !ValidCookieName(p.StickyCookie), "sticky_cookie", wantCookie),
		Bad(p.SessionCookie != "" && !ValidCookieName(p.SessionCookie), "session_cookie", wantCookie),
		Bad(strings.ContainsAny(p.StickyCookieAttrs, "\r\n"), "sticky_cookie_attrs", wantOneLine),
		Bad(p.SendProxy != "" && p.SendProxy != "v1" && p.SendProxy != "v2", "send_proxy", wantProxy),
		Bad(p.ConnectTimeout <= 0, "connect_timeout", wantPositive),
		Bad(p.IdleTimeout < 0, "idle_timeout", wantIdle),
		Bad(h.Interval <= 0, "health.interval", wantPositive),
		Bad(h.Timeout <= 0, "health.timeout", wantPositive),
		Bad(h.Rise < 1 || h.Rise > 1000, "health.rise", wantCount),
		Bad(h.Fall < 1 || h.Fall > 1000, "health.fall", wantCount),
		Bad(h.HTTPPath != "" && !serversfile.ValidPath(h.HTTPPath), "health.http", wantCheckPath),
	)
}

// Bad is an Invalid of key, allowing want, when bad holds; nil otherwise.
func Bad(bad bool, key, want string) *Invalid {
	if !bad {
		return nil
	}
	return &Invalid{Key: key, Want: want}
}

// First returns the first of checks that is not nil.
func First(checks ...*Invalid) *Invalid {
	for _, c := range checks {
		if c != nil {
			return c
		}
	}
	return nil
}

func validBalance(name string) bool {
	_, err := ring.ParseBalance(name)
	return err == nil
}

// duration parses a duration setting; a value that is not one is out of every range.
func duration(s string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	return d, err == nil
}
