package demo

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Each backend answers with its own name, in the header and the body.
func TestBackendsSayWhoTheyAre(t *testing.T) {
	backends, stop, err := Backends(3)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if len(backends) != 3 {
		t.Fatalf("%d backends, want 3", len(backends))
	}
	for _, b := range backends {
		res, err := http.Get("http://" + b.Addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.Header.Get("X-Backend") != b.ID || !strings.Contains(string(body), b.ID) || !strings.Contains(string(body), "/x") {
			t.Errorf("%s answered %q with X-Backend %q", b.ID, body, res.Header.Get("X-Backend"))
		}
	}
}
