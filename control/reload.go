package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"lb/ring"
	"lb/serversfile"
)

// Changes counts what a reload did.
type Changes struct {
	Added, Removed, Reweighted, Unchanged int
}

// Reload reads the servers file again and makes the ring what it says:
//   - a backend with the same id and address keeps its state (drained stays drained), health
//     and connections, and takes the file's weight;
//   - a backend no longer in the file (or whose id or address changed) is removed: no new
//     connection goes to it once Reload returns, and its open connections finish;
//   - a new backend starts down and is probed before Reload returns: up if it answered,
//     otherwise after the prober's Rise good probes.
//
// A file that cannot be read or has a mistake changes nothing; the error (a
// *serversfile.LineError for a mistake) says where and why.
func (c *Control) Reload(ctx context.Context) (Changes, error) {
	data, err := os.ReadFile(c.cfg.File)
	if err != nil {
		return Changes{}, fmt.Errorf("servers file: %w", err)
	}
	return c.reload(ctx, data)
}

func (c *Control) reload(ctx context.Context, data []byte) (Changes, error) {
	want, err := serversfile.Parse(c.cfg.File, bytes.NewReader(data))
	if err != nil {
		return Changes{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loaded = sha256.Sum256(data)
	return c.apply(ctx, want)
}

// Apply makes the ring the backends of want, as Reload does with the servers file's: for a
// pool of a config file that was loaded again.
func (c *Control) Apply(ctx context.Context, want []ring.Backend) (Changes, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apply(ctx, want)
}

// apply is Apply with c.mu held.
func (c *Control) apply(ctx context.Context, want []ring.Backend) (Changes, error) {
	have := map[string]ring.Backend{}
	for _, s := range c.cfg.Ring.Snapshot() {
		have[s.ID] = s.Backend
	}
	var ch Changes
	var added []ring.Backend
	keep := map[string]bool{}
	for _, b := range want {
		old, ok := have[b.ID]
		switch {
		case !ok || old.Addr != b.Addr:
			added = append(added, b)
		case old.Weight != b.Weight:
			c.cfg.Ring.SetWeight(b.ID, b.Weight)
			ch.Reweighted++
			keep[b.ID] = true
		default:
			ch.Unchanged++
			keep[b.ID] = true
		}
		if keep[b.ID] {
			delete(c.removing, b.ID) // the file wins: a backend it lists stays (draining)
		}
	}
	// Removals first: a backend whose address or id moved to another line frees them for it.
	for id := range have {
		if !keep[id] {
			c.cfg.Ring.SetState(id, ring.Draining)
			c.cfg.Ring.Remove(id)
			delete(c.removing, id)
			ch.Removed++
		}
	}
	for _, b := range added {
		if err := c.addDown(b); err != nil {
			// Parse checked the file for duplicates and every other backend is gone: this is a bug.
			return ch, err
		}
		ch.Added++
	}
	if len(added) > 0 {
		c.cfg.Prober.Admit(ctx, added)
	}
	return ch, nil
}

// ReloadAndLog is Reload with its outcome logged: the counts, or the file, line and reason
// of a bad file, which changed nothing. It is what SIGHUP and Watch call.
func (c *Control) ReloadAndLog(ctx context.Context, why string) {
	ch, err := c.Reload(ctx)
	c.logReload(why, ch, err)
}

func (c *Control) logReload(why string, ch Changes, err error) {
	if err != nil {
		var le *serversfile.LineError
		e := c.cfg.Log.Error().Str("trigger", why).Err(err)
		if errors.As(err, &le) {
			e = e.Str("file", le.File).Int("line", le.Line).Str("reason", le.Reason)
		}
		e.Msg("servers file not reloaded: the backends stay as they were; fix the file and save it again")
		return
	}
	c.cfg.Log.Info().Str("trigger", why).Str("file", c.cfg.File).
		Int("added", ch.Added).Int("removed", ch.Removed).Int("reweighted", ch.Reweighted).Int("unchanged", ch.Unchanged).
		Msg("servers file reloaded")
}

// settle is how long Watch waits after the last event in the directory before it reads the
// file: an editor's save or a ConfigMap update is several events in a few milliseconds.
const settle = 100 * time.Millisecond

// Watch reloads the servers file whenever its content changes, until ctx is done (see
// WatchFile).
func (c *Control) Watch(ctx context.Context) error {
	c.mu.Lock()
	if c.loaded == ([sha256.Size]byte{}) {
		// Started from a file read elsewhere: take its content now as the one in effect.
		if data, err := os.ReadFile(c.cfg.File); err == nil {
			c.loaded = sha256.Sum256(data)
		}
	}
	c.mu.Unlock()
	return WatchFile(ctx, c.cfg.File, c.cfg.Log, c.reloadIfChanged)
}

// WatchFile calls changed a moment after events in path's directory settle, until ctx is
// done: changed reads the file and acts if its content changed. It watches the directory,
// not the file, so it sees editors that save by renaming a new file over the old one and
// Kubernetes ConfigMap updates (a symlink swap of ..data). It returns an error when the
// directory cannot be watched, and nil when ctx is done.
func WatchFile(ctx context.Context, path string, log zerolog.Logger, changed func(context.Context)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	defer w.Close()
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s's directory %s: %w", path, dir, err)
	}

	timer := time.NewTimer(settle)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
				continue
			}
			timer.Reset(settle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn().Err(err).Str("dir", dir).Msg("watching a file: an event may be lost; SIGHUP reloads by hand")
			timer.Reset(settle)
		case <-timer.C:
			changed(ctx)
		}
	}
}

// reloadIfChanged reloads the file when its content differs from the one last loaded, so
// that events for other files of the directory cost a read and a hash, not a reload.
func (c *Control) reloadIfChanged(ctx context.Context) {
	data, err := os.ReadFile(c.cfg.File)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.logReload("watch", Changes{}, fmt.Errorf("servers file: %w", err))
		}
		return // between an editor's delete and its create: the next event brings it back
	}
	c.mu.Lock()
	same := sha256.Sum256(data) == c.loaded
	c.mu.Unlock()
	if same {
		return
	}
	ch, err := c.reload(ctx, data)
	if err != nil {
		c.mu.Lock()
		c.loaded = sha256.Sum256(data) // logged once, not again at every unrelated event
		c.mu.Unlock()
	}
	c.logReload("watch", ch, err)
}
