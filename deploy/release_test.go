package deploy

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// The documented release command builds static, stamped binaries for both architectures
// and a checksum file that matches them.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: cross-builds lb twice")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "release.sh")
	cmd.Env = append(os.Environ(), "OUT="+out, "VERSION=v0.0.0-test", "SOURCE_DATE_EPOCH=1796000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/release.sh: %v\n%s", err, b)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	sums := readSums(t, filepath.Join(out, "SHA256SUMS"))
	if len(sums) != len(machines) {
		t.Errorf("SHA256SUMS lists %v, want one line per architecture", sums)
	}
	for arch, machine := range machines {
		name := "lb-v0.0.0-test-linux-" + arch
		path := filepath.Join(out, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); sums[name] != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: sha256 %x, SHA256SUMS says %q", name, sum, sums[name])
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if f.Machine != machine {
			t.Errorf("%s: machine %v, want %v", name, f.Machine, machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s: dynamically linked (%v): want a static binary (CGO_ENABLED=0)", name, p.Type)
			}
		}
		f.Close()
		if arch == runtime.GOARCH {
			v, err := exec.Command(path, "--version").Output()
			commit, _ := exec.Command("git", "rev-parse", "HEAD").Output()
			want := "lb version v0.0.0-test commit " + string(commit[:12]) + " built 2026-11-30T"
			if err != nil || !strings.HasPrefix(string(v), want) {
				t.Errorf("%s --version: %q, %v; want it to start %q", name, v, err, want)
			}
		}
	}
}

func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not \"SUM  NAME\"", sc.Text())
		}
		sums[name] = sum
	}
	return sums
}

// The systemd unit passes systemd-analyze verify (with ExecStart pointing at a real lb) and
// has the settings a load balancer needs.
func TestSystemdUnit(t *testing.T) {
	analyze := ciRequires(t, "systemd-analyze", "systemd")
	data, err := os.ReadFile("systemd/lb.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{"LimitNOFILE=", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "ExecReload=/bin/kill -HUP $MAINPID",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes"} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("lb.service has no line %q", want)
		}
	}
	var args, env []string
	for line := range strings.SplitSeq(unit, "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart=/usr/local/bin/lb "); ok {
			args = strings.Fields(rest)
		}
		if rest, ok := strings.CutPrefix(line, "Environment="); ok {
			env = append(env, rest)
		}
	}
	if len(args) == 0 || args[0] != "serve" {
		t.Fatal("lb.service has no ExecStart=/usr/local/bin/lb serve ...")
	}
	var names []string
	for _, e := range env {
		names = append(names, strings.SplitN(e, "=", 2)[0])
	}
	checkFlags(t, "deploy/systemd/lb.service", args, names)
	if !slices.Contains(env, "LB_CONFIG=/etc/lb/lb.yaml") {
		t.Errorf("lb.service environment %q: want LB_CONFIG=/etc/lb/lb.yaml, the config it serves", env)
	}
	t.Run("serves", func(t *testing.T) { systemdServes(t, args) })

	path := filepath.Join(t.TempDir(), "lb.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/lb", lbBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "lb.service") {
		t.Fatalf("systemd-analyze verify lb.service: %v\n%s", err, out)
	}
}

// systemdServes runs the unit's ExecStart with deploy/systemd/lb.yaml as /etc/lb/lb.yaml
// would be (its listener moved to a free loopback port, its servers file written beside
// it), as systemd runs it: lb serves the config, systemctl reload (SIGHUP) applies a new
// servers file, and --watch applies an edit of the servers file too.
func systemdServes(t *testing.T, args []string) {
	shipped, err := os.ReadFile("systemd/lb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, listen := t.TempDir(), freeAddr(t)
	cfg := strings.Replace(string(shipped), "listen: :80", "listen: "+listen, 1)
	if cfg == string(shipped) {
		t.Fatal("systemd/lb.yaml has no `listen: :80` line to move to a free port")
	}
	writeFile(t, dir+"/lb.yaml", cfg)
	writeFile(t, dir+"/servers.txt", httpBackend(t)+" id=one\n")
	args = slices.Clone(args)
	for i, a := range args {
		if a == "--admin-listen" {
			args[i+1] = freeAddr(t)
		}
	}
	lb := serve(t, args, []string{"LB_CONFIG=" + dir + "/lb.yaml", "LB_LOG_FORMAT=json"})
	if status := get(t, listen); status != "HTTP/1.1 200 OK" {
		t.Fatalf("GET through lb: %q, want 200\n%s", status, lb.all())
	}
	mark := lb.mark()
	writeFile(t, dir+"/servers.txt", httpBackend(t)+" id=two\n")
	if !lb.waitLog(mark, `"config reloaded"`) {
		t.Fatalf("--watch did not apply the edited servers file:\n%s", lb.all())
	}
	mark = lb.mark()
	lb.cmd.Process.Signal(syscall.SIGHUP) // ExecReload
	if !lb.waitLog(mark, `"config reloaded"`) {
		t.Fatalf("SIGHUP (systemctl reload) did not reload:\n%s", lb.all())
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
