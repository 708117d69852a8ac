package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// integration is the plugin's name on the portal: /packer/integrations/<org>/<integration>.
const integration = "instancestore"

// repoURL is where the portal's readers find the repository's files (examples).
const repoURL = "https://github.com/instancestore/packer-plugin-instancestore/"

// componentTypes maps the docs folders to the portal's component types.
var componentTypes = map[string]string{
	"builders":        "builder",
	"provisioners":    "provisioner",
	"post-processors": "post-processor",
	"datasources":     "data-source",
}

// Compile writes dst/README.md from src/README.md and, for every src/<folder>/<name>.mdx,
// dst/components/<type>/<name>/README.md without its front matter and title (the portal
// shows its own), with links to the old plugin pages rewritten to the portal's. Any
// other file or folder in src is an error: the portal has no place for it. The
// component pages and README of dst are replaced; everything else in dst
// (metadata.hcl) is kept.
func Compile(src, dst, org string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	type page struct{ from, to string }
	var pages []page
	for _, e := range entries {
		name := e.Name()
		switch {
		case !e.IsDir() && name == "README.md":
			pages = append(pages, page{filepath.Join(src, name), "README.md"})
		case e.IsDir() && componentTypes[name] != "":
			files, err := os.ReadDir(filepath.Join(src, name))
			if err != nil {
				return err
			}
			for _, f := range files {
				if f.IsDir() || filepath.Ext(f.Name()) != ".mdx" {
					return fmt.Errorf("%s: unexpected entry %s: component docs are %s/<name>.mdx files", src, filepath.Join(name, f.Name()), name)
				}
				slug := strings.TrimSuffix(f.Name(), ".mdx")
				pages = append(pages, page{filepath.Join(src, name, f.Name()), filepath.Join("components", componentTypes[name], slug, "README.md")})
			}
		default:
			return fmt.Errorf("%s: unexpected folder or file %q: the integrations portal takes README.md and the folders %s only (put guides into README.md or a component page)", src, name, strings.Join(sortedKeys(componentTypes), ", "))
		}
	}
	if err := os.RemoveAll(filepath.Join(dst, "components")); err != nil {
		return err
	}
	for _, p := range pages {
		data, err := os.ReadFile(p.from)
		if err != nil {
			return err
		}
		if p.to != "README.md" {
			if data, err = stripHeader(data); err != nil {
				return fmt.Errorf("%s: %w", p.from, err)
			}
		}
		data = RewriteLinks(data, org)
		out := filepath.Join(dst, p.to)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(out, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// stripHeader removes the front matter and the first-level title.
func stripHeader(data []byte) ([]byte, error) {
	if bytes.HasPrefix(data, []byte("---\n")) {
		end := bytes.Index(data[4:], []byte("\n---\n"))
		if end < 0 {
			return nil, fmt.Errorf("front matter is not closed by ---")
		}
		data = data[4+end+5:]
	}
	data = bytes.TrimLeft(data, "\n")
	if bytes.HasPrefix(data, []byte("# ")) {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		} else {
			data = nil
		}
	}
	return bytes.TrimLeft(data, "\n"), nil
}

// corePlugins are the components that come with Packer itself: their docs are under
// /packer/docs, not /packer/integrations.
var corePlugins = map[string]bool{
	"builders/null": true, "builders/file": true,
	"provisioners/shell": true, "provisioners/shell-local": true, "provisioners/file": true,
	"provisioners/powershell": true, "provisioners/windows-shell": true,
	"provisioners/windows-restart": true, "provisioners/breakpoint": true,
	"post-processors/manifest": true, "post-processors/shell-local": true,
	"post-processors/checksum": true, "post-processors/compress": true,
	"post-processors/artifice": true,
	"datasources/http":         true, "datasources/null": true,
}

// rePluginLink finds links to the plugin pages of the old packer.io layout
// (/packer/plugins/<folder>/<plugin>[/<component>][#anchor]), which the amazon
// plugin's docs partials still use.
var rePluginLink = regexp.MustCompile(`\]\(/packer/plugins/([a-z-]+)/([a-z0-9-]+)(?:/([a-z0-9-]+))?(#[^)\s]*)?\)`)

// RewriteLinks points links to old plugin pages at the pages of the portal: core
// components to /packer/docs, other plugins to their integration (HashiCorp's, or ours
// for this plugin).
func RewriteLinks(data []byte, org string) []byte {
	return rePluginLink.ReplaceAllFunc(data, func(m []byte) []byte {
		g := rePluginLink.FindSubmatch(m)
		folder, plugin, component, anchor := string(g[1]), string(g[2]), string(g[3]), string(g[4])
		typ := componentTypes[folder]
		if typ == "" {
			return m
		}
		if component == "" && corePlugins[folder+"/"+plugin] {
			return []byte(fmt.Sprintf("](/packer/docs/%s/%s%s)", folder, plugin, anchor))
		}
		owner := "hashicorp"
		if plugin == integration {
			owner = org
		}
		if component == "" {
			return []byte(fmt.Sprintf("](/packer/integrations/%s/%s%s)", owner, plugin, anchor))
		}
		return []byte(fmt.Sprintf("](/packer/integrations/%s/%s/latest/components/%s/%s%s)", owner, plugin, typ, component, anchor))
	})
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
