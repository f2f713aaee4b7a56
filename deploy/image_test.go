package deploy

import (
	"encoding/json"
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
	// --no-cache: a layer cached by another build of the same Dockerfile and context (a
	// concurrent test run) would carry that build's labels, not this one's.
	build := exec.Command(podman, "build", "--no-cache", "--target", "local", "--pull=never",
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
