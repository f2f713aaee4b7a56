package control

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"lb/health"
	"lb/ring"
	"lb/serversfile"
)

// bigControl is a Control over n backends (on ports nothing listens on; nothing is probed).
func bigControl(b *testing.B, n int) (*Control, []string) {
	b.Helper()
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("10.%d.%d.%d:8080 id=b%d", i>>16&255, i>>8&255, i&255, i)
	}
	path := filepath.Join(b.TempDir(), "servers.txt")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		b.Fatal(err)
	}
	backends, err := serversfile.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	r, err := ring.New(backends...)
	if err != nil {
		b.Fatal(err)
	}
	p := health.NewProber(r, health.Config{}, zerolog.Nop())
	return New(Config{Ring: r, Prober: p, Log: zerolog.Nop()}), lines
}

// BenchmarkList is the cost of GET /backends' data for 10,000 backends.
func BenchmarkList(b *testing.B) {
	c, _ := bigControl(b, 10_000)
	b.ReportAllocs()
	for b.Loop() {
		if len(c.List()) != 10_000 {
			b.Fatal("short list")
		}
	}
}

// BenchmarkReloadOneWeight is a reload of a 10,000-backend file that re-weights one line:
// parsing it and applying it.
func BenchmarkReloadOneWeight(b *testing.B) {
	c, lines := bigControl(b, 10_000)
	files := [2][]byte{[]byte(strings.Join(lines, "\n")), nil}
	lines[5000] += " weight=2"
	files[1] = []byte(strings.Join(lines, "\n"))
	apply := func(data []byte) (Changes, error) {
		want, err := serversfile.Parse("servers.txt", bytes.NewReader(data))
		if err != nil {
			return Changes{}, err
		}
		return c.Apply(context.Background(), want)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ch, err := apply(files[i%2])
		if err != nil || ch.Reweighted != 1 {
			b.Fatal(ch, err)
		}
	}
}
