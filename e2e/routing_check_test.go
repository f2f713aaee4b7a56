package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lb check: the example of docs/configuration.md is valid (exit 0); a config error exits 2 naming the
// file, line and column, for lb check and lb probe alike.
func TestCheckConfig(t *testing.T) {
	stdout, stderr, status := runLB(t, "check", "--config", "../testdata/routing/lb.yaml")
	if status != 0 || !strings.Contains(stdout, "ok: 2 listeners, 4 pools") {
		t.Fatalf("lb check of the example: exit %d\n%s%s", status, stdout, stderr)
	}
	path := filepath.Join(t.TempDir(), "lb.yaml")
	bad := "listeners:\n  - listen: 127.0.0.1:0\n    routes:\n      - match: {sni: a.test, hots: b}\n        pool: a\npools:\n  a: {servers: [127.0.0.1:1]}\n"
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	want := path + `:4:30: unknown key "hots" in match: want sni, alpn, host, path_prefix, h2c, protocol or source`
	for _, cmd := range [][]string{{"check", "--config", path}, {"probe", "--config", path}} {
		_, stderr, status := runLB(t, cmd...)
		if status != 2 || !strings.Contains(stderr, want) {
			t.Errorf("lb %s with an unknown key: exit %d, stderr %q; want 2 and %q", cmd[0], status, stderr, want)
		}
	}
}
