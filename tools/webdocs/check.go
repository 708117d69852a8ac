package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// Check reads every page of the integration docs in dir (README.md and
// components/<type>/<name>/README.md) and reports each link that would not work on the
// integrations portal:
//   - relative links (the portal serves pages at other paths than the repository's);
//   - links to old /packer/plugins/ pages;
//   - anchors (#x) that name no heading or option of the page they point at, on this
//     page or another page of this integration;
//   - links to pages of this integration that do not exist;
//   - links to files of this repository (on GitHub) that do not exist under repo.
//
// It also checks that metadata.hcl declares exactly the components that have pages.
func Check(dir, repo string) ([]string, error) {
	pages := map[string]string{} // portal path -> file
	base := "/packer/integrations/"
	org, err := metadataOrg(dir)
	if err != nil {
		return nil, err
	}
	root := base + org + "/" + integration
	pages[root] = filepath.Join(dir, "README.md")
	comps, _ := filepath.Glob(filepath.Join(dir, "components", "*", "*", "README.md"))
	for _, c := range comps {
		rel, _ := filepath.Rel(filepath.Join(dir, "components"), filepath.Dir(c))
		pages[root+"/latest/components/"+filepath.ToSlash(rel)] = c
	}
	anchors := map[string]map[string]bool{}
	texts := map[string]string{}
	for p, f := range pages {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		texts[p] = string(data)
		anchors[p] = Anchors(string(data))
	}
	var problems []string
	for _, p := range sortedPages(pages) {
		for _, l := range Links(texts[p]) {
			if msg := checkLink(l, p, root, repo, pages, anchors); msg != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", pages[p], l.Line, l.Target, msg))
			}
		}
	}
	problems = append(problems, checkMetadata(dir, comps)...)
	return problems, nil
}

func checkLink(l Link, page, root, repo string, pages map[string]string, anchors map[string]map[string]bool) string {
	t := l.Target
	switch {
	case strings.HasPrefix(t, "mailto:"):
		return ""
	case strings.HasPrefix(t, "#"):
		if !anchors[page][t[1:]] {
			return "no heading or option with this anchor on the page"
		}
		return ""
	case strings.HasPrefix(t, "https://developer.hashicorp.com"+root):
		return checkLink(Link{Target: strings.TrimPrefix(t, "https://developer.hashicorp.com"), Line: l.Line}, page, root, repo, pages, anchors)
	case strings.HasPrefix(t, repoURL):
		rest := strings.TrimPrefix(t, repoURL)
		parts := strings.SplitN(rest, "/", 3) // blob|tree, branch, path
		if len(parts) < 3 || (parts[0] != "blob" && parts[0] != "tree") {
			return "a repository link is " + repoURL + "blob/main/PATH or tree/main/PATH"
		}
		file := strings.SplitN(parts[2], "#", 2)[0]
		if _, err := os.Stat(filepath.Join(repo, filepath.FromSlash(file))); err != nil {
			return "no such file in the repository"
		}
		return ""
	case strings.HasPrefix(t, "http://"), strings.HasPrefix(t, "https://"):
		return ""
	case strings.HasPrefix(t, "/packer/plugins/"):
		return "old plugin page: the portal has these under /packer/integrations/ (or /packer/docs/ for Packer's own components)"
	case t == root || strings.HasPrefix(t, root+"/") || strings.HasPrefix(t, root+"#"):
		target, anchor, _ := strings.Cut(t, "#")
		if _, ok := pages[target]; !ok {
			return "no such page in this integration"
		}
		if anchor != "" && !anchors[target][anchor] {
			return "no heading or option with this anchor on " + target
		}
		return ""
	case strings.HasPrefix(t, "/"):
		return "" // another page of the portal (Packer's docs, other integrations)
	default:
		return "relative link: it does not resolve on the integrations portal; link to " + repoURL + "blob/main/... or to a portal page"
	}
}

// Link is one link target of a page.
type Link struct {
	Target string
	Line   int
}

var (
	reMDLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	reRefDef = regexp.MustCompile(`^\s*\[[^\]]+\]:\s*(\S+)`)
	reHref   = regexp.MustCompile(`href="([^"]+)"`)
)

// Links returns the link targets outside code blocks and inline code.
func Links(text string) []Link {
	var out []Link
	for i, line := range proseLines(text) {
		for _, m := range reMDLink.FindAllStringSubmatch(line, -1) {
			out = append(out, Link{m[1], i + 1})
		}
		for _, m := range reHref.FindAllStringSubmatch(line, -1) {
			out = append(out, Link{m[1], i + 1})
		}
		if m := reRefDef.FindStringSubmatch(line); m != nil {
			out = append(out, Link{m[1], i + 1})
		}
	}
	return out
}

// proseLines returns the page's lines with fenced code blocks and inline code blanked.
func proseLines(text string) []string {
	lines := strings.Split(text, "\n")
	fence := ""
	reInline := regexp.MustCompile("`[^`]*`")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if fence != "" {
			if strings.HasPrefix(t, fence) {
				fence = ""
			}
			lines[i] = ""
			continue
		}
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			fence = t[:3]
			lines[i] = ""
			continue
		}
		lines[i] = reInline.ReplaceAllString(l, "``")
	}
	return lines
}

var (
	reHeading  = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	reOption   = regexp.MustCompile("^\\s*[-*]\\s+`([^`]+)`")
	reExplicit = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
)

// Anchors returns the anchors the portal gives a page: one per heading (GitHub's
// slugs, with -1, -2... for repeats), one per option entry (a list item that starts
// with `name`, as the generated partials write options), and explicit <a id>s.
func Anchors(text string) map[string]bool {
	a := map[string]bool{}
	seen := map[string]int{}
	lines := strings.Split(text, "\n")
	fence := ""
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if fence != "" {
			if strings.HasPrefix(t, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			fence = t[:3]
			continue
		}
		if m := reHeading.FindStringSubmatch(l); m != nil {
			s := Slug(m[1])
			if n := seen[s]; n > 0 {
				a[fmt.Sprintf("%s-%d", s, n)] = true
			} else {
				a[s] = true
			}
			seen[s]++
		}
		if m := reOption.FindStringSubmatch(l); m != nil {
			a[m[1]] = true
		}
		for _, m := range reExplicit.FindAllStringSubmatch(l, -1) {
			a[m[1]] = true
		}
	}
	return a
}

// Slug is GitHub's heading anchor: lower case, punctuation dropped (but - and _),
// spaces to hyphens; markdown link syntax keeps only its text.
func Slug(heading string) string {
	heading = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`).ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

var (
	reComponent = regexp.MustCompile(`(?s)component\s*\{\s*type\s*=\s*"([^"]+)"\s*name\s*=\s*"[^"]*"\s*slug\s*=\s*"([^"]+)"\s*\}`)
	reIdent     = regexp.MustCompile(`identifier\s*=\s*"packer/([^/"]+)/([^"]+)"`)
)

func metadataOrg(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "metadata.hcl"))
	if err != nil {
		return "", err
	}
	m := reIdent.FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("%s/metadata.hcl: no identifier = \"packer/<org>/<name>\"", dir)
	}
	if string(m[2]) != integration {
		return "", fmt.Errorf("%s/metadata.hcl: identifier names %q, not %q", dir, m[2], integration)
	}
	return string(m[1]), nil
}

// checkMetadata compares metadata.hcl's component blocks with the component pages.
func checkMetadata(dir string, pages []string) []string {
	data, err := os.ReadFile(filepath.Join(dir, "metadata.hcl"))
	if err != nil {
		return []string{err.Error()}
	}
	declared := map[string]bool{}
	for _, m := range reComponent.FindAllSubmatch(data, -1) {
		declared[string(m[1])+"/"+string(m[2])] = true
	}
	var problems []string
	have := map[string]bool{}
	for _, p := range pages {
		rel, _ := filepath.Rel(filepath.Join(dir, "components"), filepath.Dir(p))
		rel = filepath.ToSlash(rel)
		have[rel] = true
		if !declared[rel] {
			problems = append(problems, fmt.Sprintf("%s/metadata.hcl: no component block for the page components/%s", dir, rel))
		}
	}
	for d := range declared {
		if !have[d] {
			problems = append(problems, fmt.Sprintf("%s/metadata.hcl: component %s has no page components/%s/README.md", dir, d, d))
		}
	}
	sort.Strings(problems)
	return problems
}

func sortedPages(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
