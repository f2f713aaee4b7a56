package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"lb/control"
)

// Client calls the API of a running lb, as lb backends, lb drain, lb enable and lb upgrade do.
type Client struct {
	Addr  string // the admin listener: host:port, or unix:PATH
	Token string // sent as a bearer token when set
}

// RefusedError is an answer in 4xx: the id, the token or the request is wrong, and the
// caller, not lb, has to change something.
type RefusedError struct{ Msg string }

func (e *RefusedError) Error() string { return e.Msg }

// Backends lists the backends of every pool.
func (c Client) Backends(ctx context.Context) ([]control.Backend, error) {
	var list []control.Backend
	return list, c.call(ctx, http.MethodGet, "/backends", &list)
}

// SetState drains or enables (verb "drain" or "enable") the backend with this id and
// returns it as it is then.
func (c Client) SetState(ctx context.Context, id, verb string) (control.Backend, error) {
	var b control.Backend
	return b, c.call(ctx, http.MethodPost, "/backends/"+url.PathEscape(id)+"/"+verb, &b)
}

// Upgrade has lb start the binary at its path in its place (POST /upgrade), and returns once
// the new process serves. It waits as long as a new process may take to probe its backends.
func (c Client) Upgrade(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return c.call(ctx, http.MethodPost, "/upgrade", nil)
}

// call makes one API call and decodes its JSON answer into out (nil: not read). Without a
// deadline in ctx, it waits 10 seconds.
func (c Client) call(ctx context.Context, method, path string, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	client := &http.Client{}
	target := "http://" + c.Addr + path
	if sock, ok := IsUnix(c.Addr); ok {
		target = "http://localhost" + path
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return &RefusedError{fmt.Sprintf("admin address %s: %v", c.Addr, err)}
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is lb running with --admin-listen %s?)", err, c.Addr)
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
		msg = fmt.Sprintf("%s %s: %s: %s", method, path, res.Status, msg)
		if res.StatusCode/100 == 4 {
			return &RefusedError{msg}
		}
		return fmt.Errorf("%s", msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not what lb sends: %w", method, target, err)
	}
	return nil
}

// PrintBackends writes list as lb backends prints it: a table, in the style of lb probe's.
func PrintBackends(w io.Writer, list []control.Backend) {
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
