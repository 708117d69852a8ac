package instancestore

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// The AMI is registered by steps.StepRegisterAMI (shared with the import
// post-processor); what the builder registers is registerInput.

// registerStep is the register step of the builder's step list.
func registerStep(c *Config) *steps.StepRegisterAMI {
	return &steps.StepRegisterAMI{
		Input:                    registerInput,
		What:                     "build",
		PollingConfig:            c.PollingConfig,
		EnableAMIENASupport:      c.AMIENASupport,
		EnableAMISriovNetSupport: c.AMISriovNetSupport,
		IMDSSupport:              c.AMIIMDSSupport,
	}
}

// rootDeviceName is the root device of the new AMI: the source AMI's, as the image is
// the source instance's root volume.
func rootDeviceName(img *ec2types.Image) string {
	if name := aws.ToString(img.RootDeviceName); name != "" {
		return name
	}
	return "/dev/sda1"
}

// registerInput is the RegisterImage request of the uploaded bundle: the source AMI's
// root device, the block device mapping the new AMI inherits (mappings.go).
func registerInput(state multistep.StateBag) (*ec2.RegisterImageInput, error) {
	b := bundleOf(state)
	if b == nil {
		return nil, errNoBundle
	}
	c := configOf(state)
	in := &ec2.RegisterImageInput{
		Name:                aws.String(c.AMIName),
		ImageLocation:       aws.String(b.ImageLocation()),
		Architecture:        ec2types.ArchitectureValues(c.AMIArchitecture),
		VirtualizationType:  aws.String(c.AMIVirtType),
		RootDeviceName:      aws.String(rootDeviceName(sourceImage(state))),
		BlockDeviceMappings: driver.EC2Mappings(amiMappings(c, sourceImage(state))),
	}
	if c.AMIVirtType == "paravirtual" {
		in.KernelId = nonEmpty(c.AMIKernelId)
		in.RamdiskId = nonEmpty(c.AMIRamdiskId)
	}
	return in, nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}
