package instancestore

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepCheckSourceAMI makes sure, before anything is launched, that the source AMI found
// by StepSourceAMIInfo can be bundled into an instance store-backed AMI and that the
// instance type can run it, and fills the AMI settings that default from the source AMI
// (architecture, kernel, RAM disk).
//
// The source may be instance store-backed (launched on an instance store family, and
// bundled as it is) or EBS-backed (launched on any type that runs it, as
// `amazon-instance` allows since packer PR #1453); an EBS-backed source gives an hvm
// AMI, and one that boots only with UEFI cannot give an AMI for the instance store
// families, which boot legacy BIOS.
type stepCheckSourceAMI struct {
	InstanceTypes  []string
	Virtualization string
}

func (s *stepCheckSourceAMI) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	img := sourceImage(state)
	c := configOf(state)
	id := aws.ToString(img.ImageId)
	virt := string(img.VirtualizationType)

	// The agent that bundles the instance is a Linux program.
	if img.Platform == ec2types.PlatformValuesWindows || strings.HasPrefix(strings.ToLower(aws.ToString(img.PlatformDetails)), "windows") {
		return haltf(state, "source AMI %s (%s) is a Windows AMI: the bundling agent runs on Linux only; use a Linux source AMI", id, aws.ToString(img.Name))
	}
	backing := "instance store-backed"
	switch img.RootDeviceType {
	case ec2types.DeviceTypeInstanceStore:
		for _, t := range s.InstanceTypes {
			if err := checkVirtualization(t, virt); err != nil {
				return halt(state, fmt.Errorf("source AMI %s: %w", id, err))
			}
		}
	case ec2types.DeviceTypeEbs:
		backing = "EBS-backed"
		// Any type that runs the source may build (EC2 refuses one that cannot). The
		// result boots on the instance store families: Xen HVM with legacy BIOS.
		if virt != "hvm" || s.Virtualization != "hvm" {
			return haltf(state, "source AMI %s is EBS-backed and %s, with ami_virtualization_type %s: from an EBS-backed source this builder makes hvm AMIs only; use an hvm source AMI and set ami_virtualization_type = \"hvm\"", id, virt, s.Virtualization)
		}
		if img.BootMode == ec2types.BootModeValuesUefi {
			return haltf(state, "source AMI %s (%s) boots with UEFI only (boot mode uefi): the instance store families (c3, d2, i2, m3, r3, x1) boot legacy BIOS only; use a source AMI whose boot mode is legacy-bios, uefi-preferred or unset (Debian, Ubuntu and Amazon Linux AMIs with a BIOS boot partition)", id, aws.ToString(img.Name))
		}
	default:
		return haltf(state, "source AMI %s (%s) has root device type %q: use an EBS-backed or instance store-backed source AMI", id, aws.ToString(img.Name), string(img.RootDeviceType))
	}
	if virt != s.Virtualization {
		return haltf(state, "source AMI %s is %s but ami_virtualization_type is %s: the image is bundled as it is, so use a %s source AMI or set ami_virtualization_type = %q",
			id, virt, s.Virtualization, s.Virtualization, virt)
	}

	arch := string(img.Architecture)
	if c.AMIArchitecture == "" {
		switch arch {
		case "x86_64", "i386":
			c.AMIArchitecture = arch
		default:
			return haltf(state, "source AMI %s has architecture %q, which no instance store-capable instance type runs; use an x86_64 or i386 source AMI", id, arch)
		}
	}
	if virt == "paravirtual" {
		if c.AMIKernelId == "" {
			c.AMIKernelId = aws.ToString(img.KernelId)
		}
		if c.AMIRamdiskId == "" {
			c.AMIRamdiskId = aws.ToString(img.RamdiskId)
		}
	}
	ui(state).Say(fmt.Sprintf("Source AMI %s is %s (%s, %s)", id, backing, virt, c.AMIArchitecture))
	return multistep.ActionContinue
}

func (s *stepCheckSourceAMI) Cleanup(multistep.StateBag) {}
