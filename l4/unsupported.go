//go:build !linux

package l4

// lb runs on Linux only: its loops wait in epoll and move bytes with splice(2). Built for
// another system, the build stops here, on this name.
const _ = lb_runs_on_Linux_only__it_needs_epoll_and_splice
