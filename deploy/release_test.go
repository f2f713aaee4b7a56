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
	"strconv"
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
	if i := slices.Index(args, "--pid-file"); i < 0 || i+1 == len(args) || args[i+1] != unitSettings(t, "systemd/lb.service")["PIDFile"] {
		t.Errorf("lb.service's ExecStart %q has no --pid-file of its PIDFile=: systemd would not follow an upgrade's new process", args)
	}
	socket := unitSettings(t, "systemd/lb.socket")
	if socket["Service"] != "lb.service" || !strings.Contains(unit, "\nRequires=lb.socket") {
		t.Errorf("lb.socket's Service= is %q and lb.service requires lb.socket: %v; want lb.service and true", socket["Service"], strings.Contains(unit, "\nRequires=lb.socket"))
	}
	t.Run("serves", func(t *testing.T) { systemdServes(t, args, socket) })

	dir := t.TempDir()
	writeFile(t, dir+"/lb.service", strings.ReplaceAll(unit, "/usr/local/bin/lb", lbBin))
	sock, err := os.ReadFile("systemd/lb.socket")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/lb.socket", string(sock))
	out, err := exec.Command(analyze, "verify", dir+"/lb.socket", dir+"/lb.service").CombinedOutput()
	if err != nil || strings.Contains(string(out), "lb.service") || strings.Contains(string(out), "lb.socket") {
		t.Fatalf("systemd-analyze verify lb.socket lb.service: %v\n%s", err, out)
	}
}

// unitSettings reads the KEY=VALUE lines of a unit file (the last of a key wins).
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}

// systemdServes runs the unit's ExecStart with deploy/systemd/lb.yaml as /etc/lb/lb.yaml
// would be (its servers file written beside it), as systemd runs it with lb.socket's
// socket: systemd-socket-activate listens (on a free loopback port, where lb.socket's
// ListenStream= and lb.yaml's listener have the same port) and starts lb once a client
// connects. lb serves that client on the socket, systemctl reload (SIGHUP) applies a new
// servers file, and --watch applies an edit of the servers file too.
func systemdServes(t *testing.T, args []string, socket map[string]string) {
	activate := ciRequires(t, "systemd-socket-activate", "systemd")
	shipped, err := os.ReadFile("systemd/lb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, listen := t.TempDir(), freeAddr(t)
	cfg := strings.Replace(string(shipped), "listen: :"+socket["ListenStream"], "listen: "+listen, 1)
	if cfg == string(shipped) {
		t.Fatalf("systemd/lb.yaml has no `listen: :%s` line, lb.socket's ListenStream=", socket["ListenStream"])
	}
	writeFile(t, dir+"/lb.yaml", cfg)
	writeFile(t, dir+"/servers.txt", httpBackend(t)+" id=one\n")
	args = slices.Clone(args)
	for i, a := range args {
		switch a {
		case "--admin-listen":
			args[i+1] = freeAddr(t)
		case "--pid-file":
			args[i+1] = dir + "/lb.pid"
		}
	}
	// systemd-socket-activate gives lb only the variables of -E, as a unit gives its own.
	argv := []string{activate, "--listen=" + listen, "--fdname=" + socket["FileDescriptorName"],
		"-E", "LB_CONFIG=" + dir + "/lb.yaml", "-E", "LB_LOG_FORMAT=json", lbBin}
	lb := start(t, append(argv, args...), nil)
	if !lb.waitLog(0, "Listening on "+listen) {
		t.Fatalf("systemd-socket-activate did not listen:\n%s", lb.all())
	}
	if status := get(t, listen); status != "HTTP/1.1 200 OK" {
		t.Fatalf("GET through lb, connected before it started: %q, want 200\n%s", status, lb.all())
	}
	if !lb.waitLog(0, `"fd_name":"`+socket["FileDescriptorName"]+`"`) || !lb.waitLog(0, `"message":"listening"`) {
		t.Fatalf("lb did not log that it serves on the socket of lb.socket:\n%s", lb.all())
	}
	if pid, err := os.ReadFile(dir + "/lb.pid"); err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(lb.cmd.Process.Pid) {
		t.Errorf("--pid-file holds %q (%v), want lb's pid %d: systemd's PIDFile= follows it", pid, err, lb.cmd.Process.Pid)
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
