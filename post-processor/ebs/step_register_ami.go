package ebspp

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"
)

// stepRegisterAMI registers the EBS-backed AMI: the snapshot as the root device (the
// source's root device name), the source's instance store mappings, its architecture
// and virtualization, BootMode legacy-bios for hvm (the bundle boots as it did),
// ENA support, and the kernel and ramdisk of a paravirtual AMI. It waits until the
// AMI is available. Cleanup deregisters it when the run failed.
type stepRegisterAMI struct {
	ami string
}

// nameData is what ami_name and ami_description may use.
type nameData struct {
	SourceAMIName, SourceAMI string
}

func (s *stepRegisterAMI) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	src := sourceOf(state)
	img := src.Image
	ictx := c.ctx
	ictx.Data = nameData{SourceAMIName: aws.ToString(img.Name), SourceAMI: aws.ToString(img.ImageId)}
	name, err := interpolate.Render(c.AMIName, &ictx)
	if err != nil {
		return halt(state, fmt.Errorf("ami_name: %w", err))
	}
	desc := aws.ToString(img.Description)
	if c.AMIDescription != "" {
		if desc, err = interpolate.Render(c.AMIDescription, &ictx); err != nil {
			return halt(state, fmt.Errorf("ami_description: %w", err))
		}
	}
	in := registerInput(c, src, name, desc, stringOf(state, keySnapshot))
	client := ec2Full(state)
	out, err := client.RegisterImage(ctx, in)
	if err != nil {
		return halt(state, fmt.Errorf("registering AMI %q: %w", name, err))
	}
	s.ami = aws.ToString(out.ImageId)
	state.Put(keyAMI, s.ami)
	ui(state).Sayf("Registered %s (%q), waiting for it to be available...", s.ami, name)
	if err := ec2.NewImageAvailableWaiter(client).Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{s.ami}}, 30*time.Minute); err != nil {
		return halt(state, fmt.Errorf("waiting for AMI %s: %w", s.ami, err))
	}
	return multistep.ActionContinue
}

// registerInput is the RegisterImage request of the EBS-backed copy of src.
func registerInput(c *Config, src *sourceImage, name, desc, snapshot string) *ec2.RegisterImageInput {
	img := src.Image
	root := aws.ToString(img.RootDeviceName)
	if root == "" {
		root = "/dev/sda1"
	}
	size := int32((src.Manifest.Size + 1<<30 - 1) >> 30)
	if c.VolumeSize > size {
		size = c.VolumeSize
	}
	mappings := []ec2types.BlockDeviceMapping{{DeviceName: aws.String(root), Ebs: &ec2types.EbsBlockDevice{
		SnapshotId: aws.String(snapshot), VolumeSize: aws.Int32(size), VolumeType: ec2types.VolumeType(c.VolumeType), DeleteOnTermination: aws.Bool(true)}}}
	for _, m := range img.BlockDeviceMappings {
		if v := aws.ToString(m.VirtualName); strings.HasPrefix(v, "ephemeral") && aws.ToString(m.DeviceName) != root {
			mappings = append(mappings, ec2types.BlockDeviceMapping{DeviceName: m.DeviceName, VirtualName: m.VirtualName})
		}
	}
	in := &ec2.RegisterImageInput{
		Name:                aws.String(name),
		Architecture:        img.Architecture,
		RootDeviceName:      aws.String(root),
		BlockDeviceMappings: mappings,
		VirtualizationType:  aws.String(string(img.VirtualizationType)),
		EnaSupport:          img.EnaSupport,
		SriovNetSupport:     img.SriovNetSupport,
	}
	if desc != "" {
		in.Description = aws.String(desc)
	}
	if c.ENASupport != nil {
		in.EnaSupport = c.ENASupport
	}
	if img.VirtualizationType == ec2types.VirtualizationTypeHvm {
		in.BootMode = ec2types.BootModeValuesLegacyBios
	} else {
		in.KernelId, in.RamdiskId = img.KernelId, img.RamdiskId
	}
	if len(c.AMITags) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: tags(c.AMITags)}}
	}
	return in
}

func (s *stepRegisterAMI) Cleanup(state multistep.StateBag) {
	if s.ami == "" || !failed(state) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := ec2Full(state).DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(s.ami)}); err != nil {
		ui(state).Error(fmt.Sprintf("Could not deregister AMI %s: %v; deregister it by hand", s.ami, err))
		return
	}
	ui(state).Sayf("Deregistered AMI %s", s.ami)
}
