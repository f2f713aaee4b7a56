// Package archtest holds docs/architecture.md's package graph to the imports of the code.
package archtest

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The graph documents the packages a user runs; test helpers, the benchmark harness and the
// end-to-end tests are not part of it.
var undocumented = regexp.MustCompile(`^lb/(internal|e2e|bench)(/|$)`)

func TestPackageGraphMatchesImports(t *testing.T) {
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	graph := regexp.MustCompile("(?s)```mermaid\ngraph LR\n(.*?)```").FindSubmatch(doc)
	if graph == nil {
		t.Fatal("docs/architecture.md has no package graph (a mermaid block: graph LR, lines such as `    app --> l4`)")
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(\S+) --> (\S+)$`).FindAllStringSubmatch(string(graph[1]), -1) {
		documented[m[1]+" --> "+m[2]] = true
	}

	out, err := exec.Command("go", "list", "-json", "lb/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	actual := map[string]bool{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if undocumented.MatchString(p.ImportPath) {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "lb/") && !undocumented.MatchString(imp) {
				actual[strings.TrimPrefix(p.ImportPath, "lb/")+" --> "+strings.TrimPrefix(imp, "lb/")] = true
			}
		}
	}
	var missing, stale []string
	for e := range actual {
		if !documented[e] {
			missing = append(missing, e)
		}
	}
	for e := range documented {
		if !actual[e] {
			stale = append(stale, e)
		}
	}
	slices.Sort(missing)
	slices.Sort(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Errorf("docs/architecture.md's package graph differs from the code:\nimports not in the graph: %v\nedges the code does not have: %v", missing, stale)
	}
}
