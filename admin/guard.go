package admin

import (
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// The guards every admin request passes before the routes, outermost first:
//
//  1. hostGuard: without a token, only a Host that names this machine's loopback (or the
//     listener's own address) is answered, so a page whose name was rebound to 127.0.0.1
//     (DNS rebinding) reads nothing.
//  2. http.CrossOriginProtection: a browser's cross-origin POST, PATCH or DELETE (a form
//     posted by another site, a no-cors fetch) is refused; clients that are not browsers,
//     and the status page itself (same origin), pass.
//  3. jsonGuard: a request that changes state and sends a body, or names its type, must send
//     JSON; that is what no form and no no-cors fetch can send.

// hostGuard refuses, when no token is set, a request whose Host is neither a loopback name or
// address nor the address the request came in on. Unix sockets are not checked: no browser
// reaches one.
func hostGuard(token string, next http.Handler) http.Handler {
	if token != "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if _, isUnix := local.(*net.UnixAddr); isUnix || localHost(r.Host, local) {
			next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusForbidden, "Host "+quote(r.Host)+" is not this machine: without --admin-token the admin API "+
			"answers only requests to localhost, 127.0.0.1 or [::1]; connect to one of those, or set --admin-token")
	})
}

// localHost reports whether host (a Host header, with or without a port) is localhost, a
// loopback address, or the IP address of local.
func localHost(host string, local net.Addr) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return true
	}
	if tcp, ok := local.(*net.TCPAddr); ok {
		own, ok := netip.AddrFromSlice(tcp.IP)
		return ok && own.Unmap() == ip
	}
	return false
}

// crossOrigin refuses browsers' cross-origin requests that change state, with a JSON error.
func crossOrigin(next http.Handler) http.Handler {
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused: the admin API takes changes from lb's own status page "+
			"and from clients that are not browsers (lb drain, curl), not from other sites' pages")
	}))
	return p.Handler(next)
}

// jsonGuard answers 415 to a request that changes state (any method but GET, HEAD and
// OPTIONS) and has a body or a Content-Type, unless that type is application/json.
func jsonGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" && r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "Content-Type "+quote(ct)+
				": send the body as JSON with Content-Type: application/json")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// quote quotes s for an error message, cut to 100 bytes.
func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return strconv.Quote(s)
}
