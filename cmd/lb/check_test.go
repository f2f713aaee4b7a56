package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The example config of docs/configuration.md is testdata/routing/lb.yaml, and lb check
// accepts it.
func TestCheckDocsExample(t *testing.T) {
	example, err := os.ReadFile("../../testdata/routing/lb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(configDocs)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```yaml\n"+string(example)+"```\n") {
		t.Fatalf("%s does not show testdata/routing/lb.yaml as it is: copy it over", configDocs)
	}
	out, err := run(t, "check", "--config", "../../testdata/routing/lb.yaml")
	if err != nil || !strings.Contains(out, "ok: 2 listeners, 4 pools, 6 backends") {
		t.Fatalf("lb check: %v\n%s", err, out)
	}
}

// README's lb.yaml (a pool with send_proxy, an HTTP check and a discover= line) is one lb
// check accepts, as it would be pasted.
func TestCheckReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "cat > lb.yaml <<'EOF'\n")
	example, _, closed := strings.Cut(rest, "\nEOF\n")
	if !ok || !closed {
		t.Fatal("README has no cat > lb.yaml <<'EOF' ... EOF example")
	}
	path := filepath.Join(t.TempDir(), "lb.yaml")
	if err := os.WriteFile(path, []byte(example+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "check", "--config", path)
	if err != nil || !strings.Contains(out, "ok: 1 listeners, 1 pools, 1 backends") {
		t.Fatalf("lb check of README's lb.yaml: %v\n%s", err, out)
	}
}

func TestCheckErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lb.yaml")
	if err := os.WriteFile(path, []byte("listeners:\n  - listen: :8080\n    routes: [{pool: web}]\npools:\n  web: {servers: [127.0.0.1:1], balance: fastest}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "check", "--config", path)
	if exitCode(err) != exitBadInput || err.Error() != path+`:5:42: bad balance "fastest": want roundrobin, leastconn, p2c, source or random` {
		t.Fatalf("lb check: %v (exit %d), want exit 2 with FILE:LINE:COL", err, exitCode(err))
	}
	_, err = run(t, "check", "--config", filepath.Join(dir, "none.yaml"))
	if exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	_, err = run(t, "check", "--config", path, "--servers", validServers(t))
	if exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "--servers with --config") {
		t.Fatalf("--servers with --config: %v", err)
	}
	_, err = run(t, "check", "--servers", filepath.Join(dir, "none.txt"))
	if exitCode(err) != exitBadInput {
		t.Fatalf("check of the flags, no servers file: %v", err)
	}
	if out, err := run(t, "check", "--servers", validServers(t)); err != nil || !strings.Contains(out, "flags: ok: 1 listeners, 1 pools") {
		t.Fatalf("check of the flags: %v %s", err, out)
	}
}

// lb probe --config probes the backends of every pool and names the pool of each row.
func TestProbeConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	path := filepath.Join(t.TempDir(), "lb.yaml")
	yaml := "listeners:\n  - listen: 127.0.0.1:0\n    routes:\n      - {match: {sni: a.test}, pool: a}\n      - pool: b\npools:\n  a: {servers: [" + ln.Addr().String() + "]}\n  b: {servers: [" + deadAddr + "]}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "probe", "--config", path, "--health-timeout", "2s")
	if exitCode(err) != exitFailure {
		t.Fatalf("probe with one down: %v, want exit 1\n%s", err, out)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			rows[f[0]+" "+f[1]] = f[3]
		}
	}
	if rows["POOL BACKEND"] != "STATE" || rows["a "+ln.Addr().String()] != "up" || rows["b "+deadAddr] != "down" {
		t.Fatalf("probe table:\n%s", out)
	}
}
