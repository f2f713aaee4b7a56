package metricstest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestKeySortsLabels(t *testing.T) {
	if got, want := Key("m", "method", "GET", "backend", "a\"b"), `m{backend="a\"b",method="GET"}`; got != want {
		t.Errorf("Key = %s, want %s", got, want)
	}
	if got := Key("m"); got != "m" {
		t.Errorf("Key without labels = %s, want m", got)
	}
}

func TestWaitScrapesUntilTheConditionHolds(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "# TYPE lb_accepted_connections_total counter\nlb_accepted_connections_total %d\n", n.Add(1))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := Wait(ctx, srv.URL, func(v Values) bool { return v["lb_accepted_connections_total"] >= 3 })
	if err != nil || v["lb_accepted_connections_total"] != 3 {
		t.Fatalf("Wait: %v, %v; want the third scrape", v, err)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_, err = Wait(short, srv.URL, func(Values) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "lb_accepted_connections_total") {
		t.Errorf("Wait past its deadline: %v; want an error showing the last samples", err)
	}
}
