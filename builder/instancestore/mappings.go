package instancestore

import (
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// The new AMI keeps the source instance's instance store volumes (driver/mappings.go,
// shared by every component): what the builder knows the instance has is the source
// AMI's instance store entries plus those launch_block_device_mappings adds; then
// ami_block_device_mappings applies entry by entry (by device name), where no_device
// drops an inherited entry. The agent cross-checks with the instance's metadata
// service (stepBundle warns on a difference).

// inheritedMappings are the instance store volumes the source instance has, as far as
// the host knows: the source AMI's and launch_block_device_mappings'.
func inheritedMappings(c *Config, src *ec2types.Image) []driver.Mapping {
	return driver.ApplyLaunchMappings(driver.ImageMappings(src), c.LaunchMappings)
}

// amiMappings is the block device mapping the new AMI is registered with (besides its
// root device), sorted by device name.
func amiMappings(c *Config, src *ec2types.Image) []driver.Mapping {
	return driver.AMIMappings(inheritedMappings(c, src), c.AMIMappings)
}

// inheritedFrom names where inheritedMappings come from, for the cross-check's warnings.
const inheritedFrom = "the source AMI's block device mappings and launch_block_device_mappings"
