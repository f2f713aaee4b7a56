package metrics

import (
	"net/http"
	"testing"
)

// FuzzMethodOf holds MethodOf to net/http's method constants as the oracle.
func FuzzMethodOf(f *testing.F) {
	for _, s := range []string{"GET", "PATCH", "get", "GETT", "", "PROPFIND", "CONNECT"} {
		f.Add([]byte(s))
	}
	std := map[string]Method{
		http.MethodGet: MethodGet, http.MethodHead: MethodHead, http.MethodPost: MethodPost,
		http.MethodPut: MethodPut, http.MethodDelete: MethodDelete, http.MethodConnect: MethodConnect,
		http.MethodOptions: MethodOptions, http.MethodTrace: MethodTrace, http.MethodPatch: MethodPatch,
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, ok := std[string(b)]
		if !ok {
			want = MethodOther
		}
		if got := MethodOf(b); got != want {
			t.Fatalf("MethodOf(%q) = %v, want %v", b, got, want)
		}
	})
}
