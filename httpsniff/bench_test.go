package httpsniff

import (
	"io"
	"testing"
	"time"
)

// replay is a Conn that hands out the same bytes again after each rewind, the way a socket
// with a whole head in its receive buffer would.
type replay struct {
	data []byte
	off  int
}

func (r *replay) Read(p []byte) (int, error) {
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

func (r *replay) SetReadDeadline(time.Time) error { return nil }

func BenchmarkParse(b *testing.B) {
	head := []byte(chromeHead)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(head); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCookie(b *testing.B) {
	h, err := Parse([]byte(chromeHead))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := h.Cookie("lb_srv"); !ok {
			b.Fatal("no lb_srv cookie")
		}
	}
}

func BenchmarkSniff(b *testing.B) {
	c := &replay{data: []byte(chromeHead)}
	buf := make([]byte, 16<<10)
	deadline := time.Now().Add(time.Hour)
	b.SetBytes(int64(len(chromeHead)))
	b.ReportAllocs()
	for b.Loop() {
		c.off = 0
		if _, _, err := Sniff(c, buf, deadline); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSniffTCP includes the loopback write and the deadline system calls.
func BenchmarkSniffTCP(b *testing.B) {
	client, server := tcpPair(b)
	head := []byte(chromeHead)
	buf := make([]byte, 16<<10)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(head); err != nil {
			b.Fatal(err)
		}
		if _, _, err := Sniff(server, buf, time.Now().Add(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	head := []byte(chromeHead)
	h, _ := Parse(head)
	c := &replay{data: head}
	buf := make([]byte, 16<<10)
	client, server := tcpPair(t)
	deadline := time.Now().Add(time.Minute)
	for name, f := range map[string]func(){
		"Parse":  func() { Parse(head) },
		"Cookie": func() { h.Cookie("lb_srv") },
		"Sniff":  func() { c.off = 0; Sniff(c, buf, deadline) },
		"SniffTCP": func() {
			client.Write(head)
			if _, _, err := Sniff(server, buf, deadline); err != nil {
				t.Fatal(err)
			}
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run; want 0", name, n)
		}
	}
}
