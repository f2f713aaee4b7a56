package app

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// watchFiles sees the file saved the ways editors and Kubernetes do: written in place, a new
// file renamed over it, and a ConfigMap's ..data symlink swap. Each change is made the
// moment the previous one was seen, and the first right after watchFiles returns: the watch
// is in place by then, so none may be missed.
func TestWatchSeesRenamesAndSymlinkSwaps(t *testing.T) {
	dir := t.TempDir()
	// The ConfigMap layout: servers.txt -> ..data/servers.txt, ..data -> ..v1.
	v1 := filepath.Join(dir, "..v1")
	must(t, os.Mkdir(v1, 0o755))
	write(t, filepath.Join(v1, "servers.txt"), "one\n")
	must(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "servers.txt"), filepath.Join(dir, "servers.txt")))
	path := filepath.Join(dir, "servers.txt")

	contents := make(chan string, 100)
	w, err := watchFiles([]string{path}, zerolog.Nop(), func() {
		data, _ := os.ReadFile(path)
		contents <- string(data)
	})
	must(t, err)
	defer w.stop()
	await := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case got := <-contents:
				if got == want {
					return
				}
			case <-deadline:
				t.Fatalf("no call back with %q within 10s", want)
			}
		}
	}

	// Kubernetes: a new timestamped dir, a new symlink renamed over ..data.
	v2 := filepath.Join(dir, "..v2")
	must(t, os.Mkdir(v2, 0o755))
	write(t, filepath.Join(v2, "servers.txt"), "two\n")
	must(t, os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	await("two\n")

	// An editor: write a new file and rename it over the old (the symlink goes away).
	tmp := filepath.Join(dir, ".servers.txt.swp")
	write(t, tmp, "three\n")
	must(t, os.Rename(tmp, path))
	await("three\n")

	// In place.
	write(t, path, "four\n")
	await("four\n")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
