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
// by StepSourceAMIInfo is instance store-backed and that the instance type can run it,
// and fills the AMI settings that default from the source AMI (architecture, kernel,
// RAM disk).
type stepCheckSourceAMI struct {
	InstanceTypes  []string
	Virtualization string
}

func (s *stepCheckSourceAMI) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	img := sourceImage(state)
	c := configOf(state)
	id := aws.ToString(img.ImageId)

	if img.RootDeviceType != ec2types.DeviceTypeInstanceStore {
		return haltf(state, "source AMI %s (%s) has root device type %q: this builder needs an instance store-backed source AMI (root device type instance-store); pick one with source_ami_filter { filters = { root-device-type = \"instance-store\" } } or use amazon-ebs for EBS-backed images",
			id, aws.ToString(img.Name), string(img.RootDeviceType))
	}
	// The agent that bundles the instance is a Linux program.
	if img.Platform == ec2types.PlatformValuesWindows || strings.HasPrefix(strings.ToLower(aws.ToString(img.PlatformDetails)), "windows") {
		return haltf(state, "source AMI %s (%s) is a Windows AMI: the bundling agent runs on Linux only; use a Linux instance store-backed source AMI", id, aws.ToString(img.Name))
	}
	virt := string(img.VirtualizationType)
	for _, t := range s.InstanceTypes {
		if err := checkVirtualization(t, virt); err != nil {
			return halt(state, fmt.Errorf("source AMI %s: %w", id, err))
		}
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
	ui(state).Say(fmt.Sprintf("Source AMI %s is instance store-backed (%s, %s)", id, virt, c.AMIArchitecture))
	return multistep.ActionContinue
}

func (s *stepCheckSourceAMI) Cleanup(multistep.StateBag) {}
