package ec2sim

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// params is one request's Query-protocol parameters. The SDK flattens lists and
// structures into dotted keys: "ImageId.1", "Filter.2.Value.1", "TagSpecification.1.Tag.3.Key".
type params struct {
	v      url.Values
	prefix string
}

func newParams(v url.Values) params { return params{v: v} }

func (p params) get(name string) string { return p.v.Get(p.prefix + name) }

func (p params) has(name string) bool { _, ok := p.v[p.prefix+name]; return ok }

// list returns name.1, name.2, ... in index order (the SDK numbers from 1 without gaps,
// but a hand-written request may skip; we sort numerically).
func (p params) list(name string) []string {
	idx := p.indices(name)
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		out = append(out, p.v.Get(fmt.Sprintf("%s%s.%d", p.prefix, name, i)))
	}
	return out
}

// structs returns one sub-view per name.N structure.
func (p params) structs(name string) []params {
	idx := p.indices(name)
	out := make([]params, 0, len(idx))
	for _, i := range idx {
		out = append(out, params{v: p.v, prefix: fmt.Sprintf("%s%s.%d.", p.prefix, name, i)})
	}
	return out
}

// sub is the view of the structure at name (e.g. "Placement." fields).
func (p params) sub(name string) params { return params{v: p.v, prefix: p.prefix + name + "."} }

func (p params) indices(name string) []int {
	pre := p.prefix + name + "."
	seen := map[int]bool{}
	for k := range p.v {
		if !strings.HasPrefix(k, pre) {
			continue
		}
		rest := k[len(pre):]
		n, _, _ := strings.Cut(rest, ".")
		// Only the index as written, without a sign or leading zeros: list and
		// structs read name.N back by it ("ImageId.01" is no ImageId.1).
		i, err := strconv.Atoi(n)
		if err == nil && i > 0 && strconv.Itoa(i) == n {
			seen[i] = true
		}
	}
	out := make([]int, 0, len(seen))
	for i := range seen {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

func (p params) boolean(name string) (val, set bool, err error) {
	s := p.get(name)
	if s == "" {
		return false, false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, true, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter %s is invalid. Expected a boolean.", s, name)
	}
	return b, true, nil
}

func (p params) integer(name string, def int) (int, error) {
	s := p.get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter %s is invalid. Expected an integer.", s, name)
	}
	return n, nil
}

// filter is one Filter.N (name and its values, OR-ed).
type filter struct {
	name   string
	values []string
}

func (p params) filters() []filter {
	var out []filter
	for _, f := range p.structs("Filter") {
		out = append(out, filter{name: f.get("Name"), values: f.list("Value")})
	}
	return out
}

// tagPairs reads Tag.N.Key/Value pairs under the given view.
func (p params) tagPairs(name string) []tag {
	var out []tag
	for _, t := range p.structs(name) {
		out = append(out, tag{Key: t.get("Key"), Value: t.get("Value")})
	}
	return out
}

// tagSpecs returns the tags of TagSpecification.N whose ResourceType is rt.
func (p params) tagSpecs(rt string) ([]tag, error) {
	var out []tag
	for _, s := range p.structs("TagSpecification") {
		if s.get("ResourceType") == "" {
			return nil, apiErr(400, "InvalidParameterValue", "TagSpecification.N.ResourceType is required")
		}
		if s.get("ResourceType") == rt {
			out = append(out, s.tagPairs("Tag")...)
		}
	}
	return out, nil
}

type tag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}
