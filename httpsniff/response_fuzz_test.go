package httpsniff

import (
	"strings"
	"testing"
)

// FuzzParseResponse checks checkResponseInvariants on any input: no panic, slices inside the
// input, Len stable under truncation and appending, decisions on prefixes kept, resumed
// parsing equal to parsing from scratch. Its seeds are in testdata/fuzz/FuzzParseResponse.
func FuzzParseResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		checkResponseInvariants(t, b)
	})
}

// FuzzAppendWithField inserts a header line into any head ParseResponse accepts and checks
// that the result parses as the same head with exactly one more field, last, and that the
// bytes after the head are unchanged. Its seeds are in testdata/fuzz/FuzzAppendWithField.
func FuzzAppendWithField(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, field string) {
		r, err := ParseResponse(b)
		if err != nil {
			return
		}
		if _, ok := checkField([]byte(field)); !ok {
			return // the caller's to get right: AppendWithField does not check it
		}
		prefix := []byte("kept")
		out := AppendWithField(prefix, b[:r.Len], []byte(field))
		if string(out[:len(prefix)]) != "kept" {
			t.Fatalf("AppendWithField overwrote dst: %q", out)
		}
		out = append(out[len(prefix):], b[r.Len:]...)
		checkAppended(t, b, r, out, field)
	})
}

// FuzzSetCookie compares SetCookie with a plain strings-based reading of RFC 6265 §5.2.
func FuzzSetCookie(f *testing.F) {
	f.Add("sid=1; Path=/", "sid")
	f.Add(` sid = "2" ;HttpOnly`, "sid")
	f.Add("noeq; sid=3", "sid")
	f.Add("a=1=2;", "a")
	f.Fuzz(func(t *testing.T, header, name string) {
		if strings.ContainsAny(header, "\r\n") {
			return // would start another header line
		}
		b := []byte("HTTP/1.1 200 OK\r\nSet-Cookie:" + header + "\r\n\r\n")
		r, err := ParseResponse(b)
		if err != nil {
			return // control characters: not a valid header value
		}
		v, ok := r.SetCookie(name)
		if !inside(b, v) {
			t.Fatalf("SetCookie(%q) = %q: not a view into the head", name, v)
		}
		pair, _, _ := strings.Cut(header, ";")
		want, wantOK := cookieByStrings(pair, name)
		if ok != wantOK || string(v) != want {
			t.Fatalf("Set-Cookie:%s\nSetCookie(%q) = %q, %t; want %q, %t", header, name, v, ok, want, wantOK)
		}
	})
}
