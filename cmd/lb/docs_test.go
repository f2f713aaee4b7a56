package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

var updateDocs = flag.Bool("update", false, "rewrite the flag table of docs/configuration.md from lb serve's flags")

const (
	configDocs    = "../../docs/configuration.md"
	flagsBegin    = "<!-- flags:begin (generated from lb serve's flags: go test ./cmd/lb -run TestConfigDocs -update) -->\n"
	flagsEnd      = "<!-- flags:end -->\n"
	updateDocsEnv = "LB_UPDATE_DOCS" // =1 does what -update does
)

// docs/configuration.md's table of lb serve's flags is what the flags say: their names,
// variables, defaults and help texts. -update (or LB_UPDATE_DOCS=1) rewrites it.
func TestConfigDocs(t *testing.T) {
	doc, err := os.ReadFile(configDocs)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := strings.Cut(string(doc), flagsBegin)
	if !ok {
		t.Fatalf("%s has no line %q", configDocs, flagsBegin)
	}
	table, after, ok := strings.Cut(rest, flagsEnd)
	if !ok {
		t.Fatalf("%s has no line %q after the table", configDocs, flagsEnd)
	}
	want := flagTable(serveCommand().Flags)
	if table == want {
		return
	}
	if *updateDocs || os.Getenv(updateDocsEnv) == "1" {
		if err := os.WriteFile(configDocs, []byte(before+flagsBegin+want+flagsEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the flag table of %s", configDocs)
		return
	}
	t.Errorf("the flag table of %s is not what lb serve's flags say: run go test ./cmd/lb -run TestConfigDocs -update", configDocs)
}

// Every flag of lb serve is in a help group, and every group is one of flagCategories.
func TestServeFlagsHaveCategory(t *testing.T) {
	var known []string
	for _, c := range flagCategories {
		known = append(known, c.name)
	}
	for _, f := range serveCommand().Flags {
		cf, ok := f.(cli.CategorizableFlag)
		if !ok {
			t.Errorf("--%s cannot have a category", f.Names()[0])
			continue
		}
		switch cat := cf.GetCategory(); {
		case cat == "":
			t.Errorf("--%s has no category: add it to flagCategories in cmd/lb/help.go", f.Names()[0])
		case !slices.Contains(known, cat):
			t.Errorf("--%s has category %q, not one of %v", f.Names()[0], cat, known)
		}
	}
}

// lb serve --help lists its flags under their groups.
func TestServeHelpGrouped(t *testing.T) {
	out, err := run(t, "serve", "--help")
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]int{}
	for _, c := range flagCategories {
		i := strings.Index(out, "\n   "+c.name+"\n")
		if i < 0 {
			t.Fatalf("lb serve --help has no group %q:\n%s", c.name, out)
		}
		at[c.name] = i
	}
	// A flag shows under its own group: after that heading, before the next one.
	for _, c := range []struct{ flag, group string }{{"--health-http", "Health checks"}, {"--watch", "Listeners and backends"}, {"--session-store", "Sessions"}} {
		i := strings.Index(out, "   "+c.flag)
		next := len(out)
		for _, j := range at {
			if j > at[c.group] && j < next {
				next = j
			}
		}
		if i < at[c.group] || i > next {
			t.Errorf("%s is not under %q in lb serve --help:\n%s", c.flag, c.group, out)
		}
	}
}

// The pages a user reads stay short enough to read (README 300 lines, a docs page 250), cite
// no source line numbers (they move), and README keeps the test command that .ci/run runs.
func TestDocsPages(t *testing.T) {
	pages, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs pages: %v", err)
	}
	lineRef := regexp.MustCompile(`\.go:[0-9]+`)
	for _, p := range append(pages, "../../README.md") {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		most := 250
		if filepath.Base(p) == "README.md" {
			most = 300
		}
		if n := strings.Count(string(data), "\n"); n > most {
			t.Errorf("%s has %d lines, over %d: move a section to a page of its own", p, n, most)
		}
		if ref := lineRef.FindString(string(data)); ref != "" {
			t.Errorf("%s cites a source line (%s): name the function instead", p, ref)
		}
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	readme, _ := os.ReadFile("../../README.md")
	const cmd = "go test -race ./... && LB_ENGINE=epoll go test -race -count=1 ./l4/ ./e2e/ && (cd deploy && go test -race ./...)"
	if !strings.Contains(string(ci), "\n"+cmd+"\n") || !strings.Contains(string(readme), "\n"+cmd+" ") {
		t.Errorf("README and .ci/run must both run %q", cmd)
	}
}
