package e2e

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

// TestCountersOnSIGUSR1: SIGUSR1 makes lb log one line of counters, and keep serving.
func TestCountersOnSIGUSR1(t *testing.T) {
	b := startTCPBackend(t, echo)
	lb := startLB(t, nil, "serve", "-f", writeServersFile(t, b.Addr), "--listen", "127.0.0.1:0")
	c := dialLB(t, lb.Addr)
	c.Write([]byte("hello"))
	if got := make([]byte, 5); !readFull(c, got) || string(got) != "hello" {
		t.Fatalf("echo: %q", got)
	}
	mark := lb.log.len()
	lb.signal(t, syscall.SIGUSR1)
	e, ok := lb.log.waitFor(mark, 5*time.Second, func(e logEntry) bool { return e.Message == "counters" })
	if !ok {
		t.Fatal("no counters line within 5 s of SIGUSR1")
	}
	var counters map[string]any
	if err := json.Unmarshal([]byte(e.raw), &counters); err != nil {
		t.Fatal(err)
	}
	n := func(k string) float64 { v, _ := counters[k].(float64); return v }
	if n("accepted") != 1 || n("active") != 1 || n("goroutines") < 1 || n("max_conns") < 1 {
		t.Errorf("counters line %s: want accepted 1, active 1, max_conns and goroutines", e.raw)
	}
	c.Close()
	lb.stop(t)
}

func readFull(c interface{ Read([]byte) (int, error) }, b []byte) bool {
	for n := 0; n < len(b); {
		m, err := c.Read(b[n:])
		if err != nil {
			return false
		}
		n += m
	}
	return true
}
