// Package agentbin carries the agent binaries (instancestore-bundler for linux/amd64
// and linux/386, gzip-compressed) inside the plugin, so that a plugin built for macOS
// or Windows can still put a Linux agent on the instance.
//
// The binaries are build outputs: `go generate ./agent/bin` (or the release build)
// writes them into dist/ before the plugin is compiled. A plain `go build` embeds none;
// the driver then falls back to the plugin's own executable when the host is
// linux/amd64 (see agent.RunIfAgent).
package agentbin

import (
	"embed"
	"io/fs"
)

//go:generate ./generate.sh

//go:embed dist
var dist embed.FS

// Gzipped returns the gzip-compressed agent binary for linux/goarch, if embedded.
func Gzipped(goarch string) ([]byte, bool) {
	b, err := fs.ReadFile(dist, "dist/instancestore-bundler-linux-"+goarch+".gz")
	if err != nil || len(b) == 0 {
		return nil, false
	}
	return b, true
}
