package importpp

import (
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// The AMI is registered by the builder's own step (steps.StepRegisterAMI: the cleanup
// of a half-made AMI, also of one whose RegisterImage answer was lost, and the
// protection turned off before deregistering); what the import registers is
// registerInput.

func registerStep(c *Config) *steps.StepRegisterAMI {
	return &steps.StepRegisterAMI{
		Input:                    registerInput,
		What:                     "import",
		PollingConfig:            c.PollingConfig,
		EnableAMIENASupport:      c.AMIENASupport,
		EnableAMISriovNetSupport: c.AMISriovNetSupport,
		IMDSSupport:              c.AMIIMDSSupport,
	}
}

// registerInput is the RegisterImage request of the uploaded bundle.
func registerInput(state multistep.StateBag) (*ec2.RegisterImageInput, error) {
	b := bundleOf(state)
	if b == nil {
		return nil, errors.New("no bundle was uploaded: nothing to register")
	}
	c := configOf(state)
	virt := imageOf(state).Virtualization
	in := &ec2.RegisterImageInput{
		Name:                aws.String(c.AMIName),
		ImageLocation:       aws.String(b.ManifestLocation),
		Architecture:        ec2types.ArchitectureValues(c.AMIArchitecture),
		VirtualizationType:  aws.String(virt),
		RootDeviceName:      aws.String(rootDevice(c, virt)),
		BlockDeviceMappings: driver.EC2Mappings(amiMappings(c)),
	}
	if virt == "paravirtual" {
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
