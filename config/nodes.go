package config

import (
	"errors"
	"strings"

	"go.yaml.in/yaml/v3"
)

var errorsAs = errors.As

// deref follows an alias (*name) to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// mapping returns the fields of n, a mapping called what, in order; a key not in allowed,
// or given twice, is an error that lists what is allowed.
func (p *parser) mapping(n *yaml.Node, what string, allowed ...string) ([]field, error) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errAt(n, "%s must be a mapping of %s", what, keyList(allowed))
	}
	var out []field
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || !contains(allowed, k.Value) {
			return nil, p.errAt(k, "unknown key %q in %s: want %s", k.Value, what, keyList(allowed))
		}
		if first, ok := seen[k.Value]; ok {
			return nil, p.errAt(k, "%s given twice in %s (first on line %d): keep one", k.Value, what, first)
		}
		seen[k.Value] = k.Line
		out = append(out, field{key: k, val: v})
	}
	return out, nil
}

// sequence returns the items of n, a list called what.
func (p *parser) sequence(n *yaml.Node, what string) ([]*yaml.Node, error) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		return nil, p.errAt(n, "%s must be a list (lines starting with -, or [a, b])", what)
	}
	return n.Content, nil
}

// scalar returns the text of n, a single value called what.
func (p *parser) scalar(n *yaml.Node, what string) (string, error) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", p.errAt(n, "%s must be a single value", what)
	}
	return n.Value, nil
}

// scalars returns the text of n, a single value or a list of them, called what.
func (p *parser) scalars(n *yaml.Node, what string) ([]string, error) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		s, err := p.scalar(n, what)
		return []string{s}, err
	}
	if len(n.Content) == 0 {
		return nil, p.errAt(n, "%s is an empty list: give at least one value, or leave the key out", what)
	}
	out := make([]string, len(n.Content))
	for i, it := range n.Content {
		s, err := p.scalar(it, what)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// keyList is "a, b or c".
func keyList(keys []string) string {
	if len(keys) == 1 {
		return keys[0]
	}
	return strings.Join(keys[:len(keys)-1], ", ") + " or " + keys[len(keys)-1]
}

func validPoolName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
