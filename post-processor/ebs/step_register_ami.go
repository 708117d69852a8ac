package ebspp

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// The volume, snapshot and register steps are the shared ones
// (builder/instancestore/steps), which the builder's ebs_copy runs too; this file
// says what the post-processor gives them.

// newCreateVolume is the volume of the image's size (or volume_size), in the helper's
// availability zone; ami is the AMI being converted.
func newCreateVolume(c *Config, ami string) *steps.StepCreateVolume {
	return &steps.StepCreateVolume{
		Options:   &c.EBSVolumeOptions,
		ImageSize: func(state multistep.StateBag) (int64, error) { return sourceOf(state).Manifest.Size, nil },
		Tags:      map[string]string{"Name": "packer instancestore-ebs " + ami},
	}
}

// newSnapshot is the root volume's snapshot, with the new AMI's tags.
func newSnapshot(c *Config, ami string) *steps.StepSnapshot {
	return &steps.StepSnapshot{
		Description: "instancestore-ebs: root of " + ami,
		Tags:        func(multistep.StateBag) ([]ec2types.Tag, error) { return steps.EC2Tags(c.AMITags), nil },
	}
}

// newRegisterAMI registers the EBS-backed AMI: the snapshot as the root device (the
// source's root device name), the source's instance store mappings, its architecture
// and virtualization, BootMode legacy-bios for hvm (the bundle boots as it did), ENA
// support, and the kernel and ramdisk of a paravirtual AMI.
func newRegisterAMI() *steps.StepRegisterEBSAMI {
	return &steps.StepRegisterEBSAMI{Image: ebsImage}
}

// nameData is what ami_name and ami_description may use.
type nameData struct {
	SourceAMIName, SourceAMI string
}

// ebsImage renders ami_name and ami_description with the source AMI and describes
// the new AMI.
func ebsImage(state multistep.StateBag) (*steps.EBSImage, error) {
	c := configOf(state)
	src := sourceOf(state)
	img := src.Image
	ictx := c.ctx
	ictx.Data = nameData{SourceAMIName: aws.ToString(img.Name), SourceAMI: aws.ToString(img.ImageId)}
	name, err := interpolate.Render(c.AMIName, &ictx)
	if err != nil {
		return nil, fmt.Errorf("ami_name: %w", err)
	}
	desc := aws.ToString(img.Description)
	if c.AMIDescription != "" {
		if desc, err = interpolate.Render(c.AMIDescription, &ictx); err != nil {
			return nil, fmt.Errorf("ami_description: %w", err)
		}
	}
	return imageOf(c, src, name, desc), nil
}

// imageOf is the EBS-backed copy of src.
func imageOf(c *Config, src *sourceImage, name, desc string) *steps.EBSImage {
	img := src.Image
	size, err := c.EBSVolumeOptions.SizeGiB("", src.Manifest.Size)
	if err != nil { // stepCreateVolume refused this size already
		size = c.VolumeSize
	}
	im := &steps.EBSImage{
		Name: name, Description: desc,
		Architecture:    img.Architecture,
		Virtualization:  img.VirtualizationType,
		KernelID:        aws.ToString(img.KernelId),
		RamdiskID:       aws.ToString(img.RamdiskId),
		RootDevice:      aws.ToString(img.RootDeviceName),
		VolumeSize:      size,
		VolumeType:      c.VolumeType,
		InstanceStore:   img.BlockDeviceMappings,
		EnaSupport:      img.EnaSupport,
		SriovNetSupport: img.SriovNetSupport,
		Tags:            steps.EC2Tags(c.AMITags),
	}
	if c.ENASupport != nil {
		im.EnaSupport = c.ENASupport
	}
	return im
}

// registerInput is the RegisterImage request of the EBS-backed copy of src.
func registerInput(c *Config, src *sourceImage, name, desc, snapshot string) *ec2.RegisterImageInput {
	return imageOf(c, src, name, desc).RegisterInput(snapshot)
}
