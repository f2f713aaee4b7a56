package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lb/internal/freeport"
)

// adminGet gets path from the admin listener with the token and decodes the JSON into out.
func adminGet(t *testing.T, addr, token, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if out != nil {
		json.NewDecoder(res.Body).Decode(out)
	}
	return res.StatusCode
}

// TestAdminCLIAndWatch runs lb with --watch and a token: lb backends, lb drain and lb enable
// from a terminal, and a servers file saved the way editors save it (a new file renamed
// over the old), which --watch applies.
func TestAdminCLIAndWatch(t *testing.T) {
	ng := startNginx(t, 3)
	servers := writeServersFile(t, ng[0].Addr+" id=n1", ng[1].Addr+" id=n2")
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	lb := startLB(t, []string{"LB_ADMIN_TOKEN=s3cret"}, "serve", "-f", servers, "--listen", "127.0.0.1:0",
		"--admin-listen", adminAddr, "--watch")

	out, stderr, status := runLB(t, "backends", "--admin-listen", adminAddr)
	if status != 2 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "Authorization: Bearer") {
		t.Errorf("lb backends without the token: exit %d, %q; want exit 2 saying how to send it", status, stderr)
	}
	out, stderr, status = runLB(t, "backends", "--admin-listen", adminAddr, "--admin-token", "s3cret")
	if status != 0 || !strings.HasPrefix(out, "BACKEND ") || strings.Count(out, " up ") != 2 || !strings.Contains(out, ng[1].Addr+"  n2") {
		t.Errorf("lb backends: exit %d\n%s%s\nwant a table of n1 and n2, up", status, out, stderr)
	}
	out, stderr, status = runLB(t, "drain", "--admin-listen", adminAddr, "--admin-token", "s3cret", "n2")
	if status != 0 || !strings.Contains(out, "draining") {
		t.Errorf("lb drain n2: exit %d\n%s%s", status, out, stderr)
	}
	for i := range 6 {
		if n, err := backendOf(&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+lb.Addr+"/"); err != nil || n != 1 {
			t.Fatalf("request %d with n2 drained: backend %d, %v; want n1", i, n, err)
		}
	}
	_, stderr, status = runLB(t, "enable", "--admin-listen", adminAddr, "--admin-token", "s3cret", "n9")
	if status != 2 || !strings.Contains(stderr, `no backend has id "n9"`) {
		t.Errorf("lb enable n9: exit %d, %q; want exit 2 naming the id", status, stderr)
	}

	// Save as an editor does: write a new file, rename it over the servers file.
	tmp := filepath.Join(filepath.Dir(servers), ".servers.txt.new")
	if err := os.WriteFile(tmp, []byte(ng[1].Addr+" id=n2\n"+ng[2].Addr+" id=n3 weight=2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, servers); err != nil {
		t.Fatal(err)
	}
	var list []struct {
		ID, State string
		Weight    int
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		adminGet(t, adminAddr, "s3cret", "/backends", &list)
		if fmt.Sprint(list) == "[{n2 draining 1} {n3 up 2}]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /backends 10s after the save = %v; want n1 gone, n2 still draining, n3 added up with weight 2", list)
		}
		time.Sleep(20 * time.Millisecond) // polling the condition, with the deadline above
	}

	// The reload's log line can reach us after the listing shows its work (lb's stderr is
	// read on its own goroutine): wait for it, so that the wait below starts after it.
	if _, ok := lb.log.waitFor(0, startDeadline, func(e logEntry) bool { return e.Message == "config reloaded" }); !ok {
		t.Fatalf("no \"config reloaded\" line for the save")
	}

	// A bad save changes nothing and says where.
	mark := lb.log.len()
	if err := os.WriteFile(servers, []byte(ng[2].Addr+" id=n3\n127.0.0.1:70000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, ok := lb.log.waitFor(mark, startDeadline, func(e logEntry) bool { return strings.HasPrefix(e.Message, "config ") })
	if !ok || e.Level != "error" || !strings.Contains(e.raw, `"line":2`) || !strings.Contains(e.raw, "bad port") {
		t.Errorf("a bad save logged %q; want an error with line 2 and the reason", e.raw)
	}
	adminGet(t, adminAddr, "s3cret", "/backends", &list)
	if fmt.Sprint(list) != "[{n2 draining 1} {n3 up 2}]" {
		t.Errorf("after a bad save: %v; want the backends unchanged", list)
	}
	if status := adminGet(t, adminAddr, "", "/readyz", nil); status != 200 {
		t.Errorf("GET /readyz without a token = %d, want 200 (n3 is up)", status)
	}
}

// TestStatusPageInBrowser loads the status page in headless Chromium, enters the token,
// finds a row per backend, clicks drain on one and sees its state change, and saves a
// screenshot (LB_UPDATE_SCREENSHOT=1 also writes docs/status-page.png for README).
func TestStatusPageInBrowser(t *testing.T) {
	chromium := requireTool(t, "chromium")
	ng := startNginx(t, 3)
	servers := writeServersFile(t, ng[0].Addr+" id=web-1", ng[1].Addr+" id=web-2 weight=2", ng[2].Addr+" id=web-3", "127.0.0.1:1 id=old-api")
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t))
	lb := startLB(t, nil, "serve", "-f", servers, "--listen", "127.0.0.1:0", "--admin-listen", adminAddr, "--admin-token", "s3cret")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 30 {
		if _, err := backendOf(client, "http://"+lb.Addr+"/"); err != nil {
			t.Fatal(err)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 720), chromedp.Flag("disable-dev-shm-usage", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 30*time.Second)
	defer cancelTimeout()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("status page: %s: %v", what, err)
		}
	}
	get := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("status page: %s: %v", what, err)
		}
		return v
	}
	// Without the token the page says why it shows nothing.
	do("load", chromedp.Navigate("http://"+adminAddr+"/"),
		chromedp.WaitVisible(chromedp.Search(`//div[@id="msg"][contains(., "admin token")]`)))
	msg := get("read the message", chromedp.Text(chromedp.CSS("#msg")))
	do("enter the token", chromedp.SendKeys(chromedp.CSS("#token"), "s3cret"), chromedp.Click(chromedp.CSS("#tokenForm button")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="old-api"]`)))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#backends tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	do("click drain", chromedp.Click(chromedp.CSS(`tr[data-id="web-2"] button.drain`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="web-2"] .state.draining`)))
	state := get("read the state", chromedp.Text(chromedp.CSS(`tr[data-id="web-2"] .state`)))
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100) /* 100: PNG */)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "send the admin token") {
		t.Errorf("the page without a token says %q; want it to ask for the token", msg)
	}
	if rows != 4 {
		t.Errorf("the page shows %d backend rows, want 4", rows)
	}
	if state != "draining" {
		t.Errorf("web-2's state after clicking drain = %q, want draining", state)
	}
	var list []struct{ ID, State string }
	adminGet(t, adminAddr, "s3cret", "/backends", &list)
	if fmt.Sprint(list) != "[{web-1 up} {web-2 draining} {web-3 up} {old-api down}]" {
		t.Errorf("GET /backends after the click = %v; want web-2 draining in lb itself", list)
	}
	path := filepath.Join(t.TempDir(), "status-page.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	if os.Getenv("LB_UPDATE_SCREENSHOT") == "1" {
		if err := os.WriteFile("../docs/status-page.png", shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
