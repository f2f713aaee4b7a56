package admin

import (
	_ "embed"
	"net/http"
)

// statusPage is the whole status page: its style and script are inline, so it works offline
// and behind any proxy. It holds no data; its script reads /backends and /stats.
//
//go:embed status.html
var statusPage []byte

func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Only the page's own inline style and script, and requests back to this listener.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(statusPage)
}
