package deploy

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The Dockerfile's local target packs a binary built here into the runtime image without
// pulling anything from a registry; podman image inspect shows what a user gets.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a container image")
	}
	podman := ciRequires(t, "podman", "podman")
	ctxDir := t.TempDir()
	data, err := os.ReadFile(lbBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "lb-test"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	tag := "localhost/lb-deploy-test:" + strings.ToLower(time.Now().UTC().Format("20060102t150405.000000000"))
	tag = strings.ReplaceAll(tag, ".", "-")
	build := exec.Command(podman, "build", "--target", "local", "--pull=never",
		"--build-arg", "BINARY=lb-test", "--build-arg", "VERSION=v0.0.0-test", "--build-arg", "COMMIT=0123abc",
		"-f", "../Dockerfile", "-t", tag, ctxDir)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("podman build --target local: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(podman, "rmi", "-f", tag).Run() })

	out, err := exec.Command(podman, "image", "inspect", tag).Output()
	if err != nil {
		t.Fatalf("podman image inspect: %v", err)
	}
	var images []struct {
		Config struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			Labels       map[string]string
			ExposedPorts map[string]struct{}
		}
	}
	if err := json.Unmarshal(out, &images); err != nil || len(images) != 1 {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	cfg := images[0].Config
	if !slices.Equal(cfg.Entrypoint, []string{"/lb"}) {
		t.Errorf("entrypoint %q, want [/lb]", cfg.Entrypoint)
	}
	if cfg.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root)", cfg.User)
	}
	if cfg.Labels["org.opencontainers.image.version"] != "v0.0.0-test" || cfg.Labels["org.opencontainers.image.revision"] != "0123abc" {
		t.Errorf("labels %v: want the OCI version v0.0.0-test and revision 0123abc", cfg.Labels)
	}
	for _, p := range []string{"7777/tcp", "9090/tcp"} {
		if _, ok := cfg.ExposedPorts[p]; !ok {
			t.Errorf("exposed ports %v: want %s", cfg.ExposedPorts, p)
		}
	}
	if len(cfg.Cmd) == 0 || cfg.Cmd[0] != "serve" {
		t.Errorf("cmd %q: want serve and its flags", cfg.Cmd)
	}
	checkFlags(t, "Dockerfile CMD", cfg.Cmd, nil)

	// Running the image needs more of the kernel than building it; where the sandbox refuses
	// (here: crun cannot set RLIMIT_NOFILE), this subtest skips with the reason and the
	// checks above stand.
	t.Run("run", func(t *testing.T) {
		run, err := exec.Command(podman, "run", "--rm", "--network=none", tag, "--version").CombinedOutput()
		if err != nil {
			t.Skipf("podman run cannot run containers here: %v: %s", err, run)
		}
		if !strings.Contains(string(run), "lb version v0.0.0-test") {
			t.Errorf("the image's lb --version printed %q", run)
		}
	})
}

// The image's ENTRYPOINT and CMD, run as a process with the image's environment (none but
// PATH) and a servers file where the image reads it: lb serves, and the metrics listener
// answers /metrics and /readyz without a token, as Prometheus and Kubernetes call them.
func TestImageDefaultCommandServes(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var entrypoint, cmd []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "ENTRYPOINT "); ok {
			must(t, json.Unmarshal([]byte(rest), &entrypoint))
		}
		if rest, ok := strings.CutPrefix(line, "CMD "); ok {
			must(t, json.Unmarshal([]byte(rest), &cmd))
		}
	}
	if !slices.Equal(entrypoint, []string{"/lb"}) || len(cmd) == 0 {
		t.Fatalf("Dockerfile: ENTRYPOINT %q CMD %q; want /lb and a command", entrypoint, cmd)
	}
	servers := filepath.Join(t.TempDir(), "servers.txt")
	writeFile(t, servers, httpBackend(t)+"\n")
	listen, metrics := freeAddr(t), freeAddr(t)
	args := slices.Clone(cmd)
	for i, a := range args {
		switch a {
		case "/etc/lb/servers.txt":
			args[i] = servers
		case ":7777":
			args[i] = listen
		case ":9090":
			args[i] = metrics
		}
	}
	if slices.Equal(args, cmd) {
		t.Fatalf("CMD %q names none of /etc/lb/servers.txt, :7777, :9090", cmd)
	}
	lb := serve(t, args, nil)
	if status := get(t, listen); status != "HTTP/1.1 200 OK" {
		t.Fatalf("GET through the image's lb: %q\n%s", status, lb.all())
	}
	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		res, err := http.Get("http://" + metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s on the metrics listener: %d, want 200 without a token", path, res.StatusCode)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
