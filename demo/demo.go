// Package demo serves the backends of lb demo: HTTP servers on loopback that say which one
// answered, so that a newcomer sees lb balance without setting anything up.
package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"lb/ring"
)

// Backends starts n HTTP servers on loopback that say who they are (the X-Backend header and
// the body), and returns them as backends and a stop that shuts them down and waits.
func Backends(n int) ([]ring.Backend, func(), error) {
	var servers []*http.Server
	var backends []ring.Backend
	var done []chan struct{}
	stop := func() {
		for i, s := range servers {
			s.Shutdown(context.Background())
			<-done[i]
		}
	}
	for i := 1; i <= n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("demo backend: %w", err)
		}
		name := "backend-" + strconv.Itoa(i)
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			fmt.Fprintf(w, "hello from %s (%s), you asked for %s\n", name, ln.Addr(), r.URL.Path)
		})}
		ch := make(chan struct{})
		go func() {
			if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				fmt.Println("demo backend:", err)
			}
			close(ch)
		}()
		servers, done = append(servers, s), append(done, ch)
		backends = append(backends, ring.Backend{ID: name, Addr: ln.Addr().String(), Weight: 1})
	}
	return backends, stop, nil
}
