package driver

import (
	"fmt"
	"log"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// A new AMI keeps the source instance's instance store volumes, as ec2-bundle-vol does
// and EC2's AMI guide promises ("the block device mapping for the new AMI contains
// information for these volumes"). Every component computes its AMI's block device
// mapping here, the one definition:
//
//   - the inherited entries: what the component knows the instance has (the builder:
//     the source AMI's instance store entries plus launch_block_device_mappings; the
//     provisioner: the instance's metadata service, read by the agent; the import
//     post-processor: nothing, there is no instance);
//   - then ami_block_device_mappings, entry by entry by device name: an entry with a
//     virtual_name replaces the inherited one on that device, no_device = true drops
//     it.
//
// The root device (ami, root) is not in the list: it is the AMI's root device name.

// Mapping is one non-root entry of an AMI's block device mapping.
type Mapping struct {
	Device   string // as EC2's API spells it: /dev/sdb
	Virtual  string // ephemeralN or swap; "" with NoDevice
	NoDevice bool   // suppress the device (only for a device nothing inherited maps)
}

func (m Mapping) String() string {
	if m.NoDevice {
		return m.Device + " (no device)"
	}
	return m.Virtual + " -> " + m.Device
}

// DevicePath is a device name as EC2's API spells it: /dev/sdb for sdb.
func DevicePath(name string) string {
	if name == "" || strings.HasPrefix(name, "/dev/") {
		return name
	}
	return "/dev/" + name
}

// IsInstanceStore reports whether virtual names an instance store volume (ephemeralN)
// or the swap volume of older instance types: the entries a new AMI inherits.
func IsInstanceStore(virtual string) bool {
	return strings.HasPrefix(virtual, "ephemeral") || virtual == "swap"
}

// ImageMappings are the instance store entries of an AMI's block device mapping (not
// its root device, not EBS volumes).
func ImageMappings(img *ec2types.Image) []Mapping {
	if img == nil {
		return nil
	}
	root := DevicePath(aws.ToString(img.RootDeviceName))
	var out []Mapping
	for _, m := range img.BlockDeviceMappings {
		dev := DevicePath(aws.ToString(m.DeviceName))
		if dev == "" || dev == root || m.NoDevice != nil || !IsInstanceStore(aws.ToString(m.VirtualName)) {
			continue
		}
		out = append(out, Mapping{Device: dev, Virtual: aws.ToString(m.VirtualName)})
	}
	return sortMappings(out)
}

// InstanceMappings are the instance store entries of what an instance's metadata
// service lists under block-device-mapping/ (virtual name -> device, as the agent
// reports it): ami and root are the root device and left out.
func InstanceMappings(metadata map[string]string) []Mapping {
	var out []Mapping
	for v, dev := range metadata {
		if IsInstanceStore(v) && dev != "" {
			out = append(out, Mapping{Device: DevicePath(dev), Virtual: v})
		}
	}
	return sortMappings(out)
}

// ApplyLaunchMappings adds the instance store volumes launch_block_device_mappings gives
// the instance to what it inherits from its AMI; no_device there removes one.
func ApplyLaunchMappings(inherited []Mapping, launch awscommon.BlockDevices) []Mapping {
	return apply(inherited, launch, true)
}

// AMIMappings is the new AMI's block device mapping (besides its root device): the
// inherited entries, then ami_block_device_mappings by device name. Sorted by device.
func AMIMappings(inherited []Mapping, ami awscommon.BlockDevices) []Mapping {
	return apply(inherited, ami, false)
}

func apply(base []Mapping, bds awscommon.BlockDevices, launch bool) []Mapping {
	byDevice := map[string]Mapping{}
	for _, m := range base {
		byDevice[m.Device] = m
	}
	for _, bd := range bds {
		dev := DevicePath(bd.DeviceName)
		switch {
		case dev == "":
		case bd.NoDevice:
			if m, inherited := byDevice[dev]; (inherited && !m.NoDevice) || launch {
				delete(byDevice, dev)
			} else {
				byDevice[dev] = Mapping{Device: dev, NoDevice: true}
			}
		case IsInstanceStore(bd.VirtualName):
			byDevice[dev] = Mapping{Device: dev, Virtual: bd.VirtualName}
		}
	}
	out := make([]Mapping, 0, len(byDevice))
	for _, m := range byDevice {
		out = append(out, m)
	}
	return sortMappings(out)
}

func sortMappings(ms []Mapping) []Mapping {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Device < ms[j].Device })
	return ms
}

// EC2Mappings is RegisterImage's BlockDeviceMappings: the ephemeralN entries and the
// suppressed devices (EC2 takes no swap entry; it stays in the manifest).
func EC2Mappings(ms []Mapping) []ec2types.BlockDeviceMapping {
	var out []ec2types.BlockDeviceMapping
	for _, m := range ms {
		switch {
		case m.NoDevice:
			out = append(out, ec2types.BlockDeviceMapping{DeviceName: aws.String(m.Device), NoDevice: aws.String("")})
		case strings.HasPrefix(m.Virtual, "ephemeral"):
			out = append(out, ec2types.BlockDeviceMapping{DeviceName: aws.String(m.Device), VirtualName: aws.String(m.Virtual)})
		}
	}
	return out
}

// ManifestMappings is the manifest's <block_device_mapping>: ami and root are the root
// device, then the instance store volumes, device names without /dev/ as
// ec2-bundle-vol writes them (the manifest writer sorts by virtual name, as
// ec2-ami-tools does: ami, ephemeral0, ..., root, swap).
func ManifestMappings(rootDevice string, ms []Mapping) []bundle.BlockDeviceMapping {
	root := DevicePath(rootDevice)
	out := []bundle.BlockDeviceMapping{
		{Virtual: "ami", Device: strings.TrimPrefix(root, "/dev/")},
		{Virtual: "root", Device: root},
	}
	for _, m := range ms {
		if !m.NoDevice && IsInstanceStore(m.Virtual) {
			out = append(out, bundle.BlockDeviceMapping{Virtual: m.Virtual, Device: strings.TrimPrefix(m.Device, "/dev/")})
		}
	}
	return out
}

// CompareMappings returns, one sentence each, how the instance store volumes the
// instance's metadata service lists differ from those the host computed (from
// computedFrom, e.g. "the source AMI and launch_block_device_mappings"). Nothing when
// they agree. Device names are compared the way EC2 renames them for the guest: sdb
// and xvdb are the same device.
func CompareMappings(computed, instance []Mapping, computedFrom string) []string {
	key := deviceKey
	host := map[string]Mapping{}
	for _, m := range computed {
		if !m.NoDevice {
			host[m.Virtual] = m
		}
	}
	inst := map[string]Mapping{}
	for _, m := range instance {
		inst[m.Virtual] = m
	}
	var out []string
	for _, m := range instance {
		h, ok := host[m.Virtual]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("the instance's metadata service lists %s, which %s lack", m, computedFrom))
		case key(h.Device) != key(m.Device):
			out = append(out, fmt.Sprintf("the instance's metadata service lists %s, %s say %s", m, computedFrom, h))
		}
	}
	for _, m := range computed {
		if _, ok := inst[m.Virtual]; !ok && !m.NoDevice {
			out = append(out, fmt.Sprintf("%s map %s, which the instance's metadata service does not list", computedFrom, m))
		}
	}
	sort.Strings(out)
	return out
}

// MappingPlan is how a component computes its new AMI's block device mapping.
type MappingPlan struct {
	// RootDevice is the AMI's root device name (/dev/sda1): the manifest's ami and
	// root entries.
	RootDevice string
	// Inherited are the instance store volumes the component knows the instance has
	// (see ImageMappings, ApplyLaunchMappings); InheritedFrom says where they come
	// from, for the warnings ("the source AMI's block device mappings").
	Inherited     []Mapping
	InheritedFrom string
	// FromInstance takes the inherited entries from the instance's metadata service
	// (the provisioner, which knows nothing else), Inherited when it cannot be read.
	FromInstance bool
	// AMI is ami_block_device_mappings: applied last, by device name.
	AMI awscommon.BlockDevices
}

// Resolve is the new AMI's mapping once the agent reported the instance's metadata
// service: the service's entries are the inherited ones (FromInstance), or are checked
// against Inherited, with a warning for every difference.
func (p *MappingPlan) Resolve(report *agent.MetadataReport, ui packersdk.Ui) []Mapping {
	inherited := p.Inherited
	switch {
	case report == nil:
	case !report.Read && p.FromInstance:
		ui.Sayf("The instance's metadata service could not be read (%s): the new AMI inherits no instance store volume", report.Note)
	case !report.Read:
		log.Printf("[INFO] the new AMI's block device mapping is not checked against the instance's metadata service: %s", report.Note)
	case p.FromInstance:
		inherited = InstanceMappings(report.BlockDeviceMapping)
		ui.Sayf("Instance store volumes the new AMI inherits from the instance's metadata service: %s", mappingList(inherited))
	default:
		diffs := CompareMappings(p.Inherited, InstanceMappings(report.BlockDeviceMapping), p.InheritedFrom)
		for _, d := range diffs {
			ui.Error("Warning: " + d)
		}
		if len(diffs) > 0 {
			ui.Error(fmt.Sprintf("Warning: the new AMI's instance store volumes are %s (from %s, then ami_block_device_mappings); set ami_block_device_mappings to map what the instance has", mappingList(AMIMappings(p.Inherited, p.AMI)), p.InheritedFrom))
		}
	}
	if report != nil && report.Read {
		if root := report.BlockDeviceMapping["root"]; root != "" && deviceKey(root) != deviceKey(p.RootDevice) {
			ui.Error(fmt.Sprintf("Warning: the instance's metadata service says its root device is %s, the new AMI's root device is %s", root, p.RootDevice))
		}
	}
	return AMIMappings(inherited, p.AMI)
}

func mappingList(ms []Mapping) string {
	if len(ms) == 0 {
		return "none"
	}
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return strings.Join(s, ", ")
}

// deviceKey is a device name as the guest may see it either way: sdb and xvdb are
// the same device (EC2 renames them for Xen guests).
func deviceKey(dev string) string {
	d := strings.TrimPrefix(dev, "/dev/")
	if strings.HasPrefix(d, "xvd") {
		d = "sd" + strings.TrimPrefix(d, "xvd")
	}
	return d
}
