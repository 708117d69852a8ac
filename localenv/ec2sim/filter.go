package ec2sim

import (
	"path"
	"strings"
)

// fieldFunc gives the values an object has for one filter name.
type fieldFunc[T any] func(T) []string

// matchFilters reports whether obj passes every filter (AND across filters, OR across
// a filter's values; '*' and '?' are wildcards, as EC2 does). tag:K, tag-key and
// tag-value use tags. An unknown filter name is EC2's InvalidParameterValue.
func matchFilters[T any](obj T, fs []filter, fields map[string]fieldFunc[T], tags []tag) (bool, error) {
	for _, f := range fs {
		var have []string
		switch {
		case strings.HasPrefix(f.name, "tag:"):
			k := strings.TrimPrefix(f.name, "tag:")
			for _, t := range tags {
				if t.Key == k {
					have = append(have, t.Value)
				}
			}
		case f.name == "tag-key":
			for _, t := range tags {
				have = append(have, t.Key)
			}
		case f.name == "tag-value":
			for _, t := range tags {
				have = append(have, t.Value)
			}
		default:
			fn, ok := fields[f.name]
			if !ok {
				return false, apiErr(400, "InvalidParameterValue", "The filter '%s' is invalid", f.name)
			}
			have = fn(obj)
		}
		if !anyMatch(have, f.values) {
			return false, nil
		}
	}
	return true, nil
}

func anyMatch(have, patterns []string) bool {
	for _, p := range patterns {
		for _, h := range have {
			if wildcard(p, h) {
				return true
			}
		}
	}
	return false
}

// wildcard matches EC2 filter patterns: '*' any run, '?' one character; '\' escapes.
func wildcard(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?\\") {
		return pattern == s
	}
	// path.Match treats '/' specially and knows '[': neutralise both.
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch c {
		case '[', ']':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\\':
			b.WriteByte(c)
			if i+1 < len(pattern) {
				i++
				b.WriteByte(pattern[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	p := strings.ReplaceAll(b.String(), "/", "\x00")
	ok, err := path.Match(p, strings.ReplaceAll(s, "/", "\x00"))
	return err == nil && ok
}

func one(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
