package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

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
