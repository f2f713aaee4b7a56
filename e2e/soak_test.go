package e2e

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSoak runs the soak (e2e/soak) on the lb binary for a minute: a random mix of clients
// while backends, Redis and lb's descriptors are taken away and given back. It fails on any
// failure no fault explains, on lost or changed bytes, and on descriptors or memory that do
// not come back. LB_SOAK sets the duration (docs/testing.md: an hour).
func TestSoak(t *testing.T) {
	slow(t, "a minute of load and chaos")
	for _, tool := range []string{"nginx", "socat", "redis-server"} {
		requireTool(t, tool)
	}
	duration := "60s"
	if d := os.Getenv("LB_SOAK"); d != "" {
		duration = d
	}
	seed := strconv.FormatInt(time.Now().UnixNano(), 10)
	cmd := exec.Command("go", "run", "./soak", "-duration", duration, "-seed", seed, "-lb", lbBin)
	cmd.Env = lbEnv()
	out, err := cmd.CombinedOutput()
	t.Logf("go run ./e2e/soak -duration %s -seed %s:\n%s", duration, seed, out)
	if err != nil || !strings.Contains(string(out), "soak: passed") {
		t.Fatalf("soak failed: %v", err)
	}
}
