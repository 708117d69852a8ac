// Command packer-plugin-instancestore is the Packer plugin that builds instance
// store-backed (S3-backed) AMIs: the `instancestore` builder (the plugin's default
// component, so templates write `source "instancestore" "name"`) and the
// `instancestore-bundle` provisioner and the `instancestore-import` post-processor.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore"
	ebspp "github.com/instancestore/packer-plugin-instancestore/post-processor/ebs"
	importpp "github.com/instancestore/packer-plugin-instancestore/post-processor/import"
	"github.com/instancestore/packer-plugin-instancestore/provisioner/bundle"
	"github.com/instancestore/packer-plugin-instancestore/version"
)

func main() {
	// Agent mode: started on the instance as `<plugin> instancestore-bundler-agent`,
	// the binary is the bundler agent and exits here. Otherwise it notes that this
	// executable can be uploaded as the agent (when no agent is embedded).
	agent.RunIfAgent()

	pps := plugin.NewSet()
	pps.RegisterBuilder(plugin.DEFAULT_NAME, new(instancestore.Builder))
	pps.RegisterProvisioner("bundle", new(bundle.Provisioner))
	pps.RegisterPostProcessor("import", new(importpp.PostProcessor))
	pps.RegisterPostProcessor("ebs", new(ebspp.PostProcessor))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
