package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/urfave/cli/v2"

	"lb/ring"
	"lb/serversfile"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "start three HTTP backends on loopback and lb in front of them, and print curl lines to try",
		Flags: withEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7777", Usage: "`ADDR` for lb to listen on"},
		}, append(append(routingFlags(), balanceFlags()...), adminFlags()...)...)...),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			o, err := parseOptions(c)
			if err != nil {
				return err
			}
			backends, stop, err := startDemoBackends(3)
			if err != nil {
				return err
			}
			defer stop()
			o.Source.Servers = &serversfile.File{Backends: backends}
			return serve(c.Context, o, func(addr string) {
				url := "http://" + addr
				fmt.Fprintf(c.App.Writer, "lb demo: 3 backends behind %s. Try:\n"+
					"  curl %s/            # each new connection goes to the next backend\n"+
					"  curl %s/ %s/ %s/    # one keep-alive connection: one backend for all three\n"+
					"  curl -si %s/ | grep X-Backend\n"+
					"Ctrl-C to stop.\n", addr, url, url, url, url, url)
			})
		},
	}
}

// startDemoBackends starts n HTTP servers on loopback that say who they are.
func startDemoBackends(n int) ([]ring.Backend, func(), error) {
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
