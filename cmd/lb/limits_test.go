package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestOutOfRangeValuesAreExit2: values that can never work stop lb with exit 2 and a message
// that names the flag, shows the value and says what is allowed, not with exit 1 from the
// listener after every backend was probed.
func TestOutOfRangeValuesAreExit2(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "servers.txt")
	os.WriteFile(good, []byte("127.0.0.1:1\n"), 0o644)
	tooMany := strconv.Itoa(runtime.NumCPU() + 1)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--port", "70000"}, "--port 70000: want a port from 1 to 65535"},
		{[]string{"--port", "-1"}, "--port -1: want a port from 1 to 65535"},
		{[]string{"--listen", "127.0.0.1:70000"}, "--listen 127.0.0.1:70000: want host:port"},
		{[]string{"--listen", "nonsense"}, "--listen nonsense: want host:port"},
		{[]string{"--listen", "127.0.0.1:http"}, "--listen 127.0.0.1:http: want host:port"},
		{[]string{"--threads", "100000"}, "--threads 100000: want 1 to "},
		{[]string{"--threads", tooMany}, "--threads " + tooMany + ": want 1 to "},
		{[]string{"--session-store", "redis://user:secret@127.0.0.1:1/0"}, "--session-store: want --session-cookie NAME beside it"},
	}
	for _, tt := range cases {
		_, err := run(t, append([]string{"serve", "-f", good}, tt.args...)...)
		if err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lb serve %s: %v (exit %d), want exit 2 with %q", strings.Join(tt.args, " "), err, exitCode(err), tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("lb serve %s: the message shows the password: %v", strings.Join(tt.args, " "), err)
		}
	}
}

func TestServersFileIsADirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := run(t, "probe", "-f", dir)
	if want := dir + ": is a directory: give the servers file itself"; err == nil || exitCode(err) != exitBadInput || err.Error() != want+", one backend per line" {
		t.Errorf("lb probe -f DIR: %v, want exit 2 and %q", err, want)
	}
}
