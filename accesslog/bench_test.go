package accesslog

import (
	"path/filepath"
	"testing"
)

// BenchmarkLine is the cost of one line on the loop (the file write happens on the log's
// own goroutine: not in ns/op, but its allocations count in allocs/op, and console's
// formatting is done there).
func BenchmarkLine(b *testing.B) {
	for _, format := range []string{"off", "json", "console"} {
		b.Run(format, func(b *testing.B) {
			dest := filepath.Join(b.TempDir(), "access.log")
			if format == "off" {
				dest, format = "off", "json"
			}
			l, err := Open(Config{Dest: dest, Format: format, MaxBuffered: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			e := entry(7)
			b.ReportAllocs()
			for b.Loop() {
				l.Log(e)
			}
			if l.Dropped() > 0 {
				b.Logf("%d lines dropped", l.Dropped())
			}
		})
	}
}
