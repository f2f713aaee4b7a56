package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// lbBin is lb built from this tree (static, as releases are), and serveHelp its
// `lb serve --help`; TestMain sets both.
var lbBin, serveHelp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lb-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		lbBin = filepath.Join(dir, "lb")
		build := exec.Command("go", "build", "-trimpath", "-o", lbBin, "./cmd/lb")
		build.Dir = ".."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/lb: %v\n%s", err, out)
			return 1
		}
		out, err := exec.Command(lbBin, "serve", "--help").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "lb serve --help: %v\n%s", err, out)
			return 1
		}
		serveHelp = string(out)
		return m.Run()
	}()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ciRequires skips the test without tool, or fails it under CI=true, where .ci/run installs
// every tool.
func ciRequires(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: install it (apt-get install %s) to run this test", tool, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: required)")
	}
	t.Skip(msg)
	return ""
}

var (
	helpFlag = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)
	helpEnv  = regexp.MustCompile(`\$(LB_[A-Z0-9_]+)`)
)

// checkFlags fails the test for every --flag in args and every LB_* name in env that
// `lb serve --help` does not list; where says which file passed them.
func checkFlags(t *testing.T, where string, args, env []string) {
	t.Helper()
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(serveHelp, -1) {
		flags[m[1]] = true
	}
	for _, m := range helpEnv.FindAllStringSubmatch(serveHelp, -1) {
		envs[m[1]] = true
	}
	if len(flags) < 10 || !flags["servers"] || !envs["LB_SERVERS"] {
		t.Fatalf("could not read the flags of lb serve --help:\n%s", serveHelp)
	}
	for _, a := range args {
		name, isFlag := strings.CutPrefix(a, "--")
		name, _, _ = strings.Cut(name, "=")
		if isFlag && !flags[name] {
			t.Errorf("%s passes --%s, which lb serve --help does not list", where, name)
		}
	}
	for _, e := range env {
		if strings.HasPrefix(e, "LB_") && !envs[e] {
			t.Errorf("%s sets %s, which lb serve --help does not list", where, e)
		}
	}
}
