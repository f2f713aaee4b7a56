package app

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/rs/zerolog"

	"lb/admin"
)

// Activated are the listening sockets systemd handed to lb (socket activation: LISTEN_PID,
// LISTEN_FDS, LISTEN_FDNAMES), which lb serves on instead of binding its own. A socket
// goes to the listener it matches: by name, the admin and metrics listeners take the
// sockets named admin and metrics (FileDescriptorName=); else by address, the listener
// whose listen address is the socket's (same port; an empty or unspecified host such as
// :80 or 0.0.0.0:80 matches any unspecified one such as [::]:80; localhost matches a
// loopback IP). A socket no listener takes, or one lb cannot serve on (a datagram socket),
// is closed with a warning once lb listens.
type Activated struct {
	socks  []socket // not taken yet
	unused []string // the names of those lb cannot serve on (a datagram socket)
}

// socket is one inherited listening socket and its name.
type socket struct {
	name string
	ln   net.Listener
}

// Activation takes the sockets systemd passed this process, and removes the variables
// that name them so that no process lb starts (an upgrade's) takes them for its own: the
// new process of an upgrade inherits them from lb instead. Nil when there are none.
func Activation() *Activated {
	var a Activated
	for _, f := range activation.Files(true) {
		ln, err := net.FileListener(f)
		f.Close() // FileListener made its own descriptor
		if err != nil {
			a.unused = append(a.unused, f.Name())
			continue
		}
		a.socks = append(a.socks, socket{name: f.Name(), ln: ln})
	}
	if len(a.socks) == 0 && len(a.unused) == 0 {
		return nil
	}
	return &a
}

// take returns, and removes, the socket for the listener named name on network and addr:
// the one of that name, else one of that address; nil if none matches.
func (a *Activated) take(name, network, addr string) *socket {
	if a == nil {
		return nil
	}
	i := slices.IndexFunc(a.socks, func(s socket) bool { return name != "" && s.name == name })
	if i < 0 {
		i = slices.IndexFunc(a.socks, func(s socket) bool {
			return s.ln.Addr().Network() == network && sameAddr(network, addr, s.ln.Addr().String())
		})
	}
	if i < 0 {
		return nil
	}
	s := a.socks[i]
	a.socks = slices.Delete(a.socks, i, i+1)
	return &s
}

// closeRest closes the sockets no listener took, and warns of each: systemd listens on an
// address that lb does not serve.
func (a *Activated) closeRest(log zerolog.Logger) {
	if a == nil {
		return
	}
	for _, s := range a.socks {
		log.Warn().Str("fd_name", s.name).Str("addr", s.ln.Addr().String()).Msg("systemd passed a socket that no listener matches (by address, or by the name admin or metrics): closed it; make lb.socket's ListenStream= and lb's listen addresses agree")
		s.ln.Close()
	}
	for _, name := range a.unused {
		log.Warn().Str("fd_name", name).Msg("systemd passed a socket that is not a listening stream socket: lb serves TCP and Unix stream sockets only; closed it")
	}
	a.socks, a.unused = nil, nil
}

// sameAddr reports whether the listen address want (as configured) names the bound
// address got.
func sameAddr(network, want, got string) bool {
	if network == "unix" {
		return want == got
	}
	wh, wp, err := net.SplitHostPort(want)
	if err != nil {
		return false
	}
	ap, err := netip.ParseAddrPort(got)
	if err != nil || wp != strconv.Itoa(int(ap.Port())) {
		return false
	}
	ip := ap.Addr().Unmap()
	switch {
	case wh == "":
		return ip.IsUnspecified()
	case strings.EqualFold(wh, "localhost"):
		return ip.IsLoopback()
	}
	w, err := netip.ParseAddr(wh)
	return err == nil && (w.Unmap() == ip || w.IsUnspecified() && ip.IsUnspecified())
}

// via gets the socket of the listener named name (admin, metrics; "" for a data
// listener): the old process's after an upgrade, else systemd's, else a new one bound. An
// upgrade hands systemd's socket on as it does the others, under the same address.
func (a *App) via(name string) admin.Via {
	return func(network, addr string, bind func(network, addr string) (net.Listener, error)) (net.Listener, error) {
		return a.o.Upgrade.via(network, addr, func(network, addr string) (net.Listener, error) {
			if s := a.o.Activated.take(name, network, addr); s != nil {
				a.log.Info().Str("listen", addr).Str("fd_name", s.name).Str("addr", s.ln.Addr().String()).Msg("listening on the socket systemd passed")
				return s.ln, nil
			}
			return bind(network, addr)
		})
	}
}
