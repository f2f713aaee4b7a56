// Package version says which build of lb runs: the release's stamp, or what the Go
// toolchain recorded of the module and its commit.
package version

import "runtime/debug"

// Stamped at build time by the release build (deploy/release.sh):
//
//	-ldflags "-X lb/version.version=v1.2.0 -X lb/version.commit=$(git rev-parse HEAD) -X lb/version.date=2026-11-30T04:00:00Z"
//
// Unstamped, they come from the module's build info (go build records the commit and its time).
var (
	version = ""
	commit  = ""
	date    = ""
)

// String is what lb --version prints after "lb version": the version, the commit and
// the build date, e.g. "v1.2.0 commit 84853d4c1a2b built 2026-11-30T04:00:00Z".
func String() string {
	v, c, d := version, commit, date
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "":
				c = s.Value
			case s.Key == "vcs.time" && d == "":
				d = s.Value + " (commit time)"
			}
		}
	}
	if v == "" {
		v = "unknown"
	}
	if len(c) > 12 {
		c = c[:12]
	}
	if c == "" {
		c = "unknown"
	}
	if d == "" {
		d = "unknown"
	}
	return v + " commit " + c + " built " + d
}
