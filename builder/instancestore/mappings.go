package instancestore

import (
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// The new AMI keeps the source instance's instance store volumes, as ec2-bundle-vol
// does and EC2's AMI guide promises: its block device mapping is the source AMI's
// instance store entries plus those launch_block_device_mappings adds, then
// ami_block_device_mappings entry by entry (by device name), where no_device drops an
// inherited entry.

// devicePath is a device name as EC2's API spells it: /dev/sdb.
func devicePath(name string) string {
	if name == "" || strings.HasPrefix(name, "/dev/") {
		return name
	}
	return "/dev/" + name
}

func isInstanceStore(virtual string) bool { return strings.HasPrefix(virtual, "ephemeral") }

// amiMappings is the block device mapping the new AMI is registered with (besides its
// root device), sorted by device name.
func amiMappings(c *Config, src *ec2types.Image) []ec2types.BlockDeviceMapping {
	byDevice := map[string]ec2types.BlockDeviceMapping{}
	if src != nil {
		root := devicePath(aws.ToString(src.RootDeviceName))
		for _, m := range src.BlockDeviceMappings {
			dev := devicePath(aws.ToString(m.DeviceName))
			if dev == "" || dev == root || m.NoDevice != nil || !isInstanceStore(aws.ToString(m.VirtualName)) {
				continue
			}
			byDevice[dev] = ec2types.BlockDeviceMapping{DeviceName: aws.String(dev), VirtualName: m.VirtualName}
		}
	}
	apply := func(bds awscommon.BlockDevices, launch bool) {
		for _, bd := range bds {
			dev := devicePath(bd.DeviceName)
			switch {
			case dev == "":
			case bd.NoDevice:
				if _, inherited := byDevice[dev]; inherited || launch {
					delete(byDevice, dev)
				} else {
					byDevice[dev] = ec2types.BlockDeviceMapping{DeviceName: aws.String(dev), NoDevice: aws.String("")}
				}
			case isInstanceStore(bd.VirtualName):
				byDevice[dev] = ec2types.BlockDeviceMapping{DeviceName: aws.String(dev), VirtualName: aws.String(bd.VirtualName)}
			}
		}
	}
	apply(c.LaunchMappings, true)
	apply(c.AMIMappings, false)
	out := make([]ec2types.BlockDeviceMapping, 0, len(byDevice))
	for _, m := range byDevice {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return aws.ToString(out[i].DeviceName) < aws.ToString(out[j].DeviceName) })
	return out
}

// manifestMappings is the manifest's <block_device_mapping>: ami and root are the
// root device, then the instance store volumes of amiMappings, device names without
// /dev/ as ec2-bundle-vol writes them (the manifest writer sorts by virtual name).
func manifestMappings(rootDevice string, mappings []ec2types.BlockDeviceMapping) []bundle.BlockDeviceMapping {
	out := []bundle.BlockDeviceMapping{
		{Virtual: "ami", Device: strings.TrimPrefix(rootDevice, "/dev/")},
		{Virtual: "root", Device: rootDevice},
	}
	for _, m := range mappings {
		if v := aws.ToString(m.VirtualName); isInstanceStore(v) {
			out = append(out, bundle.BlockDeviceMapping{Virtual: v, Device: strings.TrimPrefix(aws.ToString(m.DeviceName), "/dev/")})
		}
	}
	return out
}
