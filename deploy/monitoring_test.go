package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"lb/internal/freeport"
)

// exposedNames starts the lb binary on one backend and returns the names its /metrics
// serves: every family, and a histogram's _bucket, _count and _sum series.
func exposedNames(t *testing.T) map[string]bool {
	t.Helper()
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	go func() { // accept and close until the listener closes: the health checks' TCP connects
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	servers := filepath.Join(t.TempDir(), "servers.txt")
	if err := os.WriteFile(servers, []byte(backend.Addr().String()+" id=web-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	cmd := exec.Command(lbBin, "serve", "-f", servers, "--listen", fmt.Sprintf("127.0.0.1:%d", freeport.Get(t)), "--admin-listen", admin)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		names, err := scrapeNames(ctx, "http://"+admin+"/metrics")
		if err == nil && names["lb_pool_backends"] {
			return names
		}
		select {
		case <-ctx.Done():
			t.Fatalf("lb's /metrics at %s: %v", admin, err)
		case <-time.After(50 * time.Millisecond): // lb is starting: ask again until the deadline
		}
	}
}

func scrapeNames(ctx context.Context, url string) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				names[f[2]+"_bucket"], names[f[2]+"_count"], names[f[2]+"_sum"] = true, true, true
			}
		}
	}
	return names, sc.Err()
}

var metricName = regexp.MustCompile(`\blb_[a-z0-9_]+\b`)

// TestMonitoringUsesOnlyMetricsLBServes: every lb_* name in the Grafana dashboard and the
// Prometheus alert rules is one the binary serves; the rules have an expression, a
// duration and a summary, and cover the outages they are for.
func TestMonitoringUsesOnlyMetricsLBServes(t *testing.T) {
	exposed := exposedNames(t)

	dash, err := os.ReadFile("grafana/lb.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("grafana/lb.json: %v", err)
	}
	if d.UID == "" || len(d.Panels) < 10 {
		t.Errorf("grafana/lb.json: uid %q, %d panels: want a uid and the overview's panels", d.UID, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("grafana/lb.json: panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				if !exposed[name] {
					t.Errorf("grafana/lb.json: panel %q uses %s, which lb does not serve", p.Title, name)
				}
			}
		}
	}

	b, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		t.Fatalf("prometheus/alerts.yaml: %v", err)
	}
	alerts := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = r.Expr
			if r.Expr == "" || r.For == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("alert %s: want an expr, a for, a severity and a summary", r.Alert)
			}
			for _, name := range metricName.FindAllString(r.Expr, -1) {
				if !exposed[name] {
					t.Errorf("alert %s uses %s, which lb does not serve", r.Alert, name)
				}
			}
		}
	}
	for alert, uses := range map[string]string{
		"LBBackendDown":         "lb_backend_up",
		"LBPoolNoBackendUp":     `lb_pool_backends{state="up"}`,
		"LBRefusingConnections": "lb_refused_connections_total",
		"LBDescriptorShortage":  `reason="no_descriptor"`,
		"LBQueueTimeouts":       `reason="queue_timeout"`,
	} {
		if !strings.Contains(alerts[alert], uses) {
			t.Errorf("alert %s: expr %q, want one on %s", alert, alerts[alert], uses)
		}
	}
	if t.Failed() {
		t.Logf("lb serves: %v", exposed)
	}
}
