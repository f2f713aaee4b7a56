package app

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// settle is how long a watch waits after the last event in the directory before it calls
// back: an editor's save or a ConfigMap update is several events in a few milliseconds.
const settle = 100 * time.Millisecond

// watcher calls back a moment after events in the directories of its files settle; the
// callback reads the files and acts if their content changed. It watches directories, not
// files, so it sees editors that save by renaming a new file over the old one and
// Kubernetes ConfigMap updates (a symlink swap of ..data).
type watcher struct {
	w    *fsnotify.Watcher
	stop func() // ends the watch and waits for its goroutine
}

// watchFiles watches the directories of paths until stop is called, calling changed as
// events settle. The watch is in place when watchFiles returns, so no change made after it
// is missed.
func watchFiles(paths []string, log zerolog.Logger, changed func()) (*watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", strings.Join(paths, ", "), err)
	}
	wt := &watcher{w: w}
	if err := wt.add(paths); err != nil {
		w.Close()
		return nil, err
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
				log.Warn().Err(err).Msg("watching the config: an event may be lost; SIGHUP reloads by hand")
				timer.Reset(settle)
			case <-timer.C:
				changed()
			}
		}
	}()
	wt.stop = func() { close(quit); <-done }
	return wt, nil
}

// add watches the directories of paths too, as after a reload that names another servers
// file. A directory watched already is left as it is.
func (wt *watcher) add(paths []string) error {
	for _, p := range paths {
		if err := wt.w.Add(filepath.Dir(p)); err != nil {
			return fmt.Errorf("watch %s's directory: %w", p, err)
		}
	}
	return nil
}
