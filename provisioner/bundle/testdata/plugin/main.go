// Command plugin is a test build of the plugin that serves only the
// instancestore-bundle provisioner, the way the real plugin main registers it
// (including agent.RunIfAgent, so that the binary doubles as the agent).
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	bundleprov "github.com/instancestore/packer-plugin-instancestore/provisioner/bundle"
	"github.com/instancestore/packer-plugin-instancestore/version"
)

func main() {
	agent.RunIfAgent()
	pps := plugin.NewSet()
	pps.RegisterProvisioner("bundle", new(bundleprov.Provisioner))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
