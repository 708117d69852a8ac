// Package version holds the plugin's version, set at release time by goreleaser.
package version

import "github.com/hashicorp/packer-plugin-sdk/version"

var (
	// Version is the main version number that is being run at the moment.
	Version = "0.1.0"
	// VersionPrerelease is a pre-release marker; "dev" for builds from source.
	VersionPrerelease = "dev"
	// VersionMetadata is build metadata, empty unless set by the release build.
	VersionMetadata = ""
	// PluginVersion is used by the plugin set to allow Packer to recognize the version of this plugin.
	PluginVersion = version.NewPluginVersion(Version, VersionPrerelease, VersionMetadata)
)
