package accesslog

import (
	"strings"
	"testing"
)

func TestRequestKeepsACopyAndBoundsIt(t *testing.T) {
	head := []byte("GET /a?b=c HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	var r Request
	r.Set(head[0:3], head[27:39], head[4:10])
	copy(head, strings.Repeat("x", len(head))) // the head buffer is reused for another connection
	var e Entry
	r.Fill(&e)
	if string(e.Method) != "GET" || string(e.Host) != "shop.example" || string(e.Path) != "/a?b=c" {
		t.Errorf("kept %q %q %q; want GET shop.example /a?b=c", e.Method, e.Host, e.Path)
	}

	long := []byte("/" + strings.Repeat("p", 4000))
	r.Set([]byte("POST"), []byte("h.example"), long)
	r.Fill(&e)
	if string(e.Method) != "POST" || string(e.Host) != "h.example" || len(e.Method)+len(e.Host)+len(e.Path) != MaxRequestBytes || string(e.Path) != string(long[:len(e.Path)]) {
		t.Errorf("a 4 KB path: method %q host %q path of %d bytes; want it cut to %d bytes in all", e.Method, e.Host, len(e.Path), MaxRequestBytes)
	}

	huge := []byte(strings.Repeat("h", 2*MaxRequestBytes))
	r.Set([]byte("GET"), huge, []byte("/x"))
	r.Fill(&e)
	if len(e.Host) != MaxRequestBytes-3 || len(e.Path) != 0 {
		t.Errorf("a huge host: host %d bytes, path %q; want host cut to %d and no path", len(e.Host), e.Path, MaxRequestBytes-3)
	}

	if a := testing.AllocsPerRun(100, func() { r.Set([]byte("GET"), []byte("a"), []byte("/b")) }); a != 0 {
		t.Errorf("Set into a grown Request: %v allocs, want 0", a)
	}
	r.Reset()
	r.Fill(&e)
	if len(e.Method)+len(e.Host)+len(e.Path) != 0 {
		t.Errorf("after Reset: %q %q %q, want empty", e.Method, e.Host, e.Path)
	}
}
