package tlstest

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Real nginx serves TLS with the certificates NewCert makes, and curl --resolve with
// --cacert verifies them: what the end-to-end routing tests rely on.
func TestNginxServesTLSWithTheCerts(t *testing.T) {
	curl := RequireTool(t, "curl")
	a, b := NewCert(t, "a.test"), NewCert(t, "b.test", "*.b.test")
	na, nb := StartNginx(t, 1, a), StartNginx(t, 2, b)
	for _, c := range []struct {
		ng   *Nginx
		name string
		ca   string
		want string
	}{
		{na, "a.test", a.CertFile, "tls-backend-1 sni=a.test alpn=h2\n"},
		{nb, "x.b.test", b.CertFile, "tls-backend-2 sni=x.b.test alpn=h2\n"},
	} {
		_, port, _ := net.SplitHostPort(c.ng.Addr)
		out, err := exec.Command(curl, "-sS", "--http2", "--max-time", "10", "--resolve", c.name+":"+port+":127.0.0.1", "--cacert", c.ca, "https://"+c.name+":"+port+"/").CombinedOutput()
		if err != nil || string(out) != c.want {
			t.Errorf("curl https://%s: %v\n%s\nwant %q", c.name, err, out, c.want)
		}
	}
	// The wrong CA fails verification: the check above is a real one.
	_, port, _ := net.SplitHostPort(na.Addr)
	out, err := exec.Command(curl, "-sS", "--max-time", "10", "--resolve", "a.test:"+port+":127.0.0.1", "--cacert", b.CertFile, "https://a.test:"+port+"/").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "certificate") {
		t.Errorf("curl with the wrong CA: %v\n%s; want a certificate error", err, out)
	}
	// And Go's client, with ALPN http/1.1.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.Pool, ServerName: "c.b.test", NextProtos: []string{"http/1.1"}}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := cl.Get("https://" + nb.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "tls-backend-2 sni=c.b.test alpn=http/1.1\n" {
		t.Errorf("Go client: %q", body)
	}
}
