// Command packer-plugin-instancestore is the Packer plugin that builds instance
// store-backed (S3-backed) AMIs: the `instancestore` builder (the plugin's default
// component, so templates write `source "instancestore" "name"`).
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore"
	"github.com/instancestore/packer-plugin-instancestore/version"
)

func main() {
	// AGENT MODE: when the agent package decides how the plugin binary acts as the
	// on-instance bundler (for example a sub-command or an environment marker), the
	// dispatch goes here, before the plugin set takes over os.Args.

	pps := plugin.NewSet()
	pps.RegisterBuilder(plugin.DEFAULT_NAME, new(instancestore.Builder))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
