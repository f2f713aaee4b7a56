package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"lb/app"
	"lb/config"
	"lb/control"
)

var (
	adminListenFlag = &cli.StringFlag{Name: "admin-listen", Usage: "`ADDR` of the admin listener (status page, /healthz, /readyz, the backend API), e.g. 127.0.0.1:9090; off unless set"}
	adminTokenFlag  = &cli.StringFlag{Name: "admin-token", Usage: "`TOKEN` every admin request but /healthz and /readyz must bring as Authorization: Bearer TOKEN; required when --admin-listen is not loopback"}
)

// adminFlags are the flags of the admin listener, for serve and demo.
func adminFlags() []cli.Flag {
	return []cli.Flag{adminListenFlag, adminTokenFlag}
}

// parseAdminOptions checks the admin flags: a listen address that parses, and a token with
// any address that is not loopback.
func parseAdminOptions(c *cli.Context) (app.Admin, error) {
	o := app.Admin{Listen: c.String("admin-listen"), Token: c.String("admin-token")}
	if o.Listen == "" {
		return o, nil
	}
	if !config.ValidListen(o.Listen) {
		return o, badInput{fmt.Errorf("--admin-listen %s: want host:port, e.g. 127.0.0.1:9090 or [::1]:9090", o.Listen)}
	}
	if strings.ContainsAny(o.Token, " \t\r\n") {
		return o, badInput{errors.New("--admin-token: want one word without spaces, e.g. from: openssl rand -hex 16")}
	}
	if o.Token == "" && !isLoopback(o.Listen) {
		return o, badInput{fmt.Errorf("--admin-listen %s is not a loopback address: set --admin-token (or LB_ADMIN_TOKEN), or listen on 127.0.0.1 or [::1]", o.Listen)}
	}
	return o, nil
}

// isLoopback reports whether every address addr listens on is a loopback one. An empty host
// means every interface; a name other than localhost may resolve anywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// The client commands: lb backends, lb drain ID, lb enable ID.

var clientAdminListenFlag = &cli.StringFlag{Name: "admin-listen", Value: "127.0.0.1:9090", Usage: "`ADDR` of lb's admin listener"}

func clientFlags() []cli.Flag {
	return withEnv(clientAdminListenFlag, adminTokenFlag)
}

func backendsCommand() *cli.Command {
	return &cli.Command{
		Name:         "backends",
		Usage:        "list the backends of a running lb (GET /backends on --admin-listen)",
		Flags:        clientFlags(),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			var list []control.Backend
			if err := adminCall(c, http.MethodGet, "/backends", &list); err != nil {
				return err
			}
			printBackends(c.App.Writer, list)
			return nil
		},
	}
}

// stateCommand is lb drain or lb enable.
func stateCommand(name, usage string) *cli.Command {
	return &cli.Command{
		Name:         name,
		Usage:        usage,
		ArgsUsage:    "ID",
		Flags:        clientFlags(),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return badInput{fmt.Errorf("lb %s takes one backend id, after the flags: lb %s [--admin-listen ADDR] ID (lb backends lists the ids)", name, name)}
			}
			var b control.Backend
			if err := adminCall(c, http.MethodPost, "/backends/"+url.PathEscape(c.Args().First())+"/"+name, &b); err != nil {
				return err
			}
			printBackends(c.App.Writer, []control.Backend{b})
			return nil
		},
	}
}

// adminCall makes one admin API call and decodes its JSON answer into out. An id the API
// does not know, or a token it refuses, is bad input; an lb that does not answer is a failure.
func adminCall(c *cli.Context, method, path string, out any) error {
	target := "http://" + c.String("admin-listen") + path
	req, err := http.NewRequestWithContext(c.Context, method, target, nil)
	if err != nil {
		return badInput{fmt.Errorf("--admin-listen %s: %w", c.String("admin-listen"), err)}
	}
	if tok := c.String("admin-token"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is lb running with --admin-listen %s?)", err, c.String("admin-listen"))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, target, err)
	}
	if res.StatusCode/100 != 2 {
		var e struct{ Error string }
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		err := fmt.Errorf("%s %s: %s: %s", method, path, res.Status, msg)
		if res.StatusCode/100 == 4 {
			return badInput{err}
		}
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not what lb sends: %w", method, target, err)
	}
	return nil
}

// printBackends writes the table of lb backends, in the style of lb probe's.
func printBackends(w io.Writer, list []control.Backend) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tID\tSTATE\tWEIGHT\tACTIVE\tTOTAL\tLAST PROBE\tERROR")
	for _, b := range list {
		probe, errText := "-", ""
		if p := b.LastProbe; p != nil {
			probe = fmt.Sprintf("%.2fms %s ago", p.LatencyMS, time.Since(p.At).Round(time.Second))
			if !p.OK {
				probe, errText = fmt.Sprintf("failed %s ago", time.Since(p.At).Round(time.Second)), p.Error
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", b.Addr, b.ID, b.State, b.Weight, b.Active, b.Connections, probe, errText)
	}
	tw.Flush()
}
