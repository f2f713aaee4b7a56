package sessions

import (
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestParseRedisURLSentinel(t *testing.T) {
	for _, tc := range []struct {
		url                    string
		addrs                  []string
		master                 string
		db                     int
		user, password         string
		sentinelUser, sentinel string
		tls                    bool
	}{
		{url: "redis+sentinel://10.0.0.1:26379/mymaster", addrs: []string{"10.0.0.1:26379"}, master: "mymaster"},
		{url: "redis+sentinel://a:26379,b:26380,c:26381/m/3", addrs: []string{"a:26379", "b:26380", "c:26381"}, master: "m", db: 3},
		{url: "redis+sentinel://:s%40cret@a:26379/m/", addrs: []string{"a:26379"}, master: "m", password: "s@cret"},
		{url: "redis+sentinel://lb:pw@a:1,[::1]:2/m/0", addrs: []string{"a:1", "[::1]:2"}, master: "m", user: "lb", password: "pw"},
		{url: "rediss+sentinel://a:26379/m", addrs: []string{"a:26379"}, master: "m", tls: true},
		{url: "REDIS+SENTINEL://a:26379/m%2Fx", addrs: []string{"a:26379"}, master: "m/x"},
		{url: "redis+sentinel://:pw@a:1/m?sentinel_password=spw&sentinel_username=su", addrs: []string{"a:1"}, master: "m", password: "pw", sentinelUser: "su", sentinel: "spw"},
	} {
		target, err := parseRedisURL(tc.url)
		if err != nil {
			t.Errorf("parseRedisURL(%q): %v", tc.url, err)
			continue
		}
		o := target.failover
		if o == nil {
			t.Errorf("parseRedisURL(%q): not a Sentinel target: %+v", tc.url, target)
			continue
		}
		if !slices.Equal(o.SentinelAddrs, tc.addrs) || o.MasterName != tc.master || o.DB != tc.db ||
			o.Username != tc.user || o.Password != tc.password || o.SentinelUsername != tc.sentinelUser ||
			o.SentinelPassword != tc.sentinel || (o.TLSConfig != nil) != tc.tls {
			t.Errorf("parseRedisURL(%q) = sentinels %q master %q db %d user %q password %q sentinel user %q password %q TLS %v; want %q %q %d %q %q %q %q %v",
				tc.url, o.SentinelAddrs, o.MasterName, o.DB, o.Username, o.Password, o.SentinelUsername, o.SentinelPassword, o.TLSConfig != nil,
				tc.addrs, tc.master, tc.db, tc.user, tc.password, tc.sentinelUser, tc.sentinel, tc.tls)
		}
	}
}

func TestParseRedisURLCluster(t *testing.T) {
	for _, tc := range []struct {
		url            string
		addrs          []string
		user, password string
		tls            bool
	}{
		{url: "redis+cluster://10.0.0.1:6379", addrs: []string{"10.0.0.1:6379"}},
		{url: "redis+cluster://a:7000,b:7001,c:7002/", addrs: []string{"a:7000", "b:7001", "c:7002"}},
		{url: "rediss+cluster://u:p%3Aw@a:7000,[::1]:7001", addrs: []string{"a:7000", "[::1]:7001"}, user: "u", password: "p:w", tls: true},
	} {
		target, err := parseRedisURL(tc.url)
		if err != nil {
			t.Errorf("parseRedisURL(%q): %v", tc.url, err)
			continue
		}
		o := target.cluster
		if o == nil {
			t.Errorf("parseRedisURL(%q): not a Cluster target: %+v", tc.url, target)
			continue
		}
		if !slices.Equal(o.Addrs, tc.addrs) || o.Username != tc.user || o.Password != tc.password || (o.TLSConfig != nil) != tc.tls {
			t.Errorf("parseRedisURL(%q) = nodes %q user %q password %q TLS %v; want %q %q %q %v",
				tc.url, o.Addrs, o.Username, o.Password, o.TLSConfig != nil, tc.addrs, tc.user, tc.password, tc.tls)
		}
	}
}

// TestParseRedisURLBad: each bad URL is refused with an error that names the form wanted,
// quotes the URL and never shows a password.
func TestParseRedisURLBad(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"redis+sentinel://:hunter2@a:26379", "no master name"},
		{"redis+sentinel://:hunter2@a:26379/", "no master name"},
		{"redis+sentinel://:hunter2@/m", "no host:port"},
		{"redis+sentinel://:hunter2@a/m", `"a" is not host:port`},
		{"redis+sentinel://:hunter2@a:1,,b:2/m", `"" is not host:port`},
		{"redis+sentinel://:hunter2@a:99999/m", "not 1 to 65535"},
		{"redis+sentinel://:hunter2@a:x/m", "not 1 to 65535"},
		{"redis+sentinel://:hunter2@a:1/m/x", `database "x"`},
		{"redis+sentinel://:hunter2@a:1/m/-1", `database "-1"`},
		{"redis+sentinel://:hunter2@a:1/m/0/9", "more than /master/db"},
		{"redis+sentinel://:hunter2@a:1/m?master_name=x", `unknown parameter "master_name"`},
		{"redis+sentinel://:hunter2@a:1/m?sentinel_password=hunter2&x=1", `unknown parameter "x"`},
		{"redis+sentinel://:hunter2%zz@a:1/m", "password: bad"},
		{"redis+cluster://:hunter2@a:1/0", "only database 0"},
		{"redis+cluster://:hunter2@a:1?read_only=true", "no parameters"},
		{"redis+cluster://:hunter2@", "no host:port"},
		{"redis://:hunter2@a:1/x", "redis+sentinel://"},
	} {
		_, err := NewRedisStore(RedisConfig{URL: tc.url}, zerolog.Nop())
		if err == nil {
			t.Errorf("NewRedisStore(URL %q): no error", tc.url)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) {
			t.Errorf("NewRedisStore(URL %q): %v; want it to say %q", tc.url, err, tc.want)
		}
		if strings.Contains(msg, "hunter2") {
			t.Errorf("NewRedisStore(URL %q): error shows the password: %v", tc.url, err)
		}
		if !strings.Contains(msg, "e.g. redis") {
			t.Errorf("NewRedisStore(URL %q): error gives no example: %v", tc.url, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:hunter2@a:1/0":                                 "redis://u:xxxxx@a:1/0",
		"redis+sentinel://:hunter2@a:1,b:2/m/0":                   "redis+sentinel://:xxxxx@a:1,b:2/m/0",
		"redis+sentinel://u:hunter2@[::1]:1,b:2/m":                "redis+sentinel://u:xxxxx@[::1]:1,b:2/m",
		"redis+sentinel://a:1/m?sentinel_password=hunter2":        "redis+sentinel://a:1/m?sentinel_password=xxxxx",
		"redis+sentinel://a:1/m?x=1&SENTINEL_PASSWORD=hunter2&y=": "redis+sentinel://a:1/m?x=1&SENTINEL_PASSWORD=xxxxx&y=",
		"rediss+cluster://u:hunter2@a:1,[::1]:2":                  "rediss+cluster://u:xxxxx@a:1,[::1]:2",
		"redis+cluster://a:1,b:2":                                 "redis+cluster://a:1,b:2",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestIsRedisURL(t *testing.T) {
	for in, want := range map[string]bool{
		"redis://a:1/0": true, "rediss://a:1": true, "redis+sentinel://a:1/m": true, "rediss+sentinel://a:1/m": true,
		"redis+cluster://a:1": true, "rediss+cluster://a:1": true, "memory": false, "a:1": false, "http://a:1": false, "sentinel://a:1/m": false,
	} {
		if got := IsRedisURL(in); got != want {
			t.Errorf("IsRedisURL(%q) = %v; want %v", in, got, want)
		}
	}
}
