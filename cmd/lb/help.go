package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// flagCategories group the flags in `lb serve --help` (urfave/cli sorts the groups by name)
// and in docs/configuration.md (in this order). A flag that sets its own Category keeps it;
// every other flag takes its group from here, and a test fails for a serve flag in none.
var flagCategories = []struct {
	name  string
	flags []string
}{
	{"Listeners and backends", []string{"config", "servers", "listen", "port", "watch", "resolver", "resolve-every", "threads"}},
	{"Health checks", []string{"health-interval", "health-timeout", "rise", "fall", "health-http", "health-expect-status"}},
	{"Balancing and stickiness", []string{"balance", "slow-start", "sticky-cookie", "sticky-cookie-attrs"}},
	{"Sessions", []string{"session-cookie", "session-store", "session-ttl", "session-secret", "session-timeout", "session-max-entries", "cluster-name"}},
	{"Clients and limits", []string{"send-proxy", "accept-proxy", "per-ip-max-conns", "per-ip-rate", "per-ip-burst", "per-ip-ipv6-prefix", "queue-timeout", "max-conns", "max-sniff-memory"}},
	{"Timeouts and sizes", []string{"sniff-timeout", "sniff-timeout-action", "max-header-bytes", "connect-timeout", "idle-timeout", "drain-timeout"}},
	{"Logging", []string{"log-level", "log-format", "access-log", "access-log-format"}},
	{"Admin", []string{"admin-listen", "admin-token", "metrics-listen"}},
}

// categoryOf is the help group of the flag called name: own if it set one, else its group in
// flagCategories, or "".
func categoryOf(name, own string) string {
	if own != "" {
		return own
	}
	for _, c := range flagCategories {
		for _, f := range c.flags {
			if f == name {
				return c.name
			}
		}
	}
	return ""
}

// flagTable renders flags as the Markdown table of docs/configuration.md: a row naming each
// category, in flagCategories' order, then its flags in the order the command lists them.
// Categories that flagCategories does not name come last.
func flagTable(flags []cli.Flag) string {
	order := []string{}
	for _, c := range flagCategories {
		order = append(order, c.name)
	}
	byCat := map[string][]cli.Flag{}
	for _, f := range flags {
		cat := ""
		if cf, ok := f.(cli.CategorizableFlag); ok {
			cat = cf.GetCategory()
		}
		if cat == "" {
			cat = "Other"
		}
		if categoryIndex(order, cat) < 0 {
			order = append(order, cat)
		}
		byCat[cat] = append(byCat[cat], f)
	}
	var b strings.Builder
	b.WriteString("| flag | env | default | meaning |\n|---|---|---|---|\n")
	for _, cat := range order {
		if len(byCat[cat]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "| **%s** | | | |\n", cat)
		for _, f := range byCat[cat] {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", flagNames(f), envOf(f), defaultOf(f), cell(usageOf(f)))
		}
	}
	return b.String()
}

func categoryIndex(order []string, cat string) int {
	for i, c := range order {
		if c == cat {
			return i
		}
	}
	return -1
}

// flagNames is "`-f, --servers FILE`": the names as --help shows them, with the value's
// placeholder.
func flagNames(f cli.Flag) string {
	var names []string
	for _, n := range f.Names() {
		if len(n) == 1 {
			names = append([]string{"-" + n}, names...)
		} else {
			names = append(names, "--"+n)
		}
	}
	s := strings.Join(names, ", ")
	if d, ok := f.(cli.DocGenerationFlag); ok && d.TakesValue() {
		if placeholder, _ := unquoteUsage(d.GetUsage()); placeholder != "" {
			s += " " + placeholder
		}
	}
	return "`" + s + "`"
}

func envOf(f cli.Flag) string {
	d, ok := f.(cli.DocGenerationFlag)
	if !ok || len(d.GetEnvVars()) == 0 {
		return ""
	}
	return "`" + strings.Join(d.GetEnvVars(), "`, `") + "`"
}

// defaultOf is the default as --help shows it; none for an empty string or a switch.
func defaultOf(f cli.Flag) string {
	d, ok := f.(cli.DocGenerationFlag)
	if !ok || !d.TakesValue() {
		return ""
	}
	v := d.GetDefaultText()
	if u, err := strconv.Unquote(v); err == nil {
		v = u // a string's default, which --help shows quoted
	}
	if v == "" {
		return ""
	}
	return "`" + cell(v) + "`"
}

func usageOf(f cli.Flag) string {
	d, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return ""
	}
	_, usage := unquoteUsage(d.GetUsage())
	return usage
}

// unquoteUsage splits a usage text as --help does: the first `word` is the value's
// placeholder, shown without its backquotes.
func unquoteUsage(usage string) (placeholder, text string) {
	before, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok := strings.Cut(rest, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}

// cell escapes what would end a Markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
