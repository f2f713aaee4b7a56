package app

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// settle is how long a watch waits after the last event in the directory before it calls
// back: an editor's save or a ConfigMap update is several events in a few milliseconds.
const settle = 100 * time.Millisecond

// watchFile calls changed a moment after events in path's directory settle, until stop is
// called; changed reads the file and acts if its content changed. It watches the directory,
// not the file, so it sees editors that save by renaming a new file over the old one and
// Kubernetes ConfigMap updates (a symlink swap of ..data). The watch is in place when
// watchFile returns, so no change made after it is missed.
func watchFile(path string, log zerolog.Logger, changed func()) (stop func(), err error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s's directory %s: %w", path, dir, err)
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		timer := time.NewTimer(settle)
		timer.Stop()
		defer timer.Stop()
		for {
			select {
			case <-quit:
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
					continue
				}
				timer.Reset(settle)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn().Err(err).Str("dir", dir).Msg("watching a file: an event may be lost; SIGHUP reloads by hand")
				timer.Reset(settle)
			case <-timer.C:
				changed()
			}
		}
	}()
	return func() { close(quit); <-done }, nil
}
