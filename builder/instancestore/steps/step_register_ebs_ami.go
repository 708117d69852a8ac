package steps

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// EBSImage is what an EBS-backed AMI is registered with besides its root snapshot.
type EBSImage struct {
	Name, Description string
	Architecture      ec2types.ArchitectureValues
	// Virtualization is hvm or paravirtual. An hvm AMI boots with BootMode
	// legacy-bios (the image's MBR boot code, as its instance store-backed
	// original); a paravirtual one with KernelID and RamdiskID.
	Virtualization      ec2types.VirtualizationType
	KernelID, RamdiskID string
	// RootDevice is the root device name (/dev/xvda, /dev/sda1).
	RootDevice string
	VolumeSize int32 // GiB
	VolumeType string
	// InstanceStore are the instance store volumes (ephemeralN) the AMI maps; one on
	// the root device's name is dropped.
	InstanceStore   []ec2types.BlockDeviceMapping
	EnaSupport      *bool
	SriovNetSupport *string
	IMDSSupport     string
	Tags            []ec2types.Tag
}

// RegisterInput is the RegisterImage request of im with snapshot as its root.
func (im *EBSImage) RegisterInput(snapshot string) *ec2.RegisterImageInput {
	root := im.RootDevice
	if root == "" {
		root = "/dev/sda1"
	}
	mappings := []ec2types.BlockDeviceMapping{{DeviceName: aws.String(root), Ebs: &ec2types.EbsBlockDevice{
		SnapshotId: aws.String(snapshot), VolumeSize: aws.Int32(im.VolumeSize), VolumeType: ec2types.VolumeType(im.VolumeType), DeleteOnTermination: aws.Bool(true)}}}
	for _, m := range im.InstanceStore {
		if strings.HasPrefix(aws.ToString(m.VirtualName), "ephemeral") && aws.ToString(m.DeviceName) != root {
			mappings = append(mappings, ec2types.BlockDeviceMapping{DeviceName: m.DeviceName, VirtualName: m.VirtualName})
		}
	}
	in := &ec2.RegisterImageInput{
		Name:                aws.String(im.Name),
		Architecture:        im.Architecture,
		RootDeviceName:      aws.String(root),
		BlockDeviceMappings: mappings,
		VirtualizationType:  aws.String(string(im.Virtualization)),
		EnaSupport:          im.EnaSupport,
		SriovNetSupport:     im.SriovNetSupport,
	}
	if im.Description != "" {
		in.Description = aws.String(im.Description)
	}
	if im.Virtualization == ec2types.VirtualizationTypeHvm {
		in.BootMode = ec2types.BootModeValuesLegacyBios
	} else {
		in.KernelId, in.RamdiskId = nonEmpty(im.KernelID), nonEmpty(im.RamdiskID)
	}
	if im.IMDSSupport != "" {
		in.ImdsSupport = ec2types.ImdsSupportValues(im.IMDSSupport)
	}
	if len(im.Tags) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: im.Tags}}
	}
	return in
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// StepRegisterEBSAMI registers the snapshot (KeyEBSSnapshot) as the root of an
// EBS-backed AMI and waits until the AMI is available. Cleanup deregisters it when the
// run failed, also when RegisterImage's answer was lost (found by name and snapshot).
type StepRegisterEBSAMI struct {
	// Image is what the component registers.
	Image func(multistep.StateBag) (*EBSImage, error)

	ami       string
	attempted *ec2.RegisterImageInput
}

func (s *StepRegisterEBSAMI) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	im, err := s.Image(state)
	if err != nil {
		return Halt(state, err)
	}
	snap := StateString(state, KeyEBSSnapshot)
	in := im.RegisterInput(snap)
	client := EBS(state)
	s.attempted = in
	out, err := client.RegisterImage(ctx, in)
	if err != nil {
		return Haltf(state, "registering the EBS-backed AMI %q from snapshot %s: %w", im.Name, snap, err)
	}
	s.ami = aws.ToString(out.ImageId)
	state.Put(KeyEBSAMI, s.ami)
	UI(state).Sayf("Registered EBS-backed AMI %s (%q), waiting for it to become available...", s.ami, im.Name)
	if err := ec2.NewImageAvailableWaiter(client).Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{s.ami}}, 30*time.Minute); err != nil {
		return Haltf(state, "waiting for AMI %s to become available: %w", s.ami, err)
	}
	return multistep.ActionContinue
}

func (s *StepRegisterEBSAMI) Cleanup(state multistep.StateBag) {
	if !Failed(state) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if s.ami == "" && s.attempted != nil {
		s.ami = s.orphan(ctx, state)
	}
	if s.ami == "" {
		return
	}
	if _, err := EBS(state).DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(s.ami)}); err != nil {
		UI(state).Error(fmt.Sprintf("Could not deregister AMI %s: %v; deregister it yourself", s.ami, err))
		return
	}
	UI(state).Sayf("Deregistered AMI %s (the run did not finish)", s.ami)
	s.ami = ""
}

// orphan finds the AMI a RegisterImage without an answer may have made: this
// account's AMI of that name whose root is this run's snapshot.
func (s *StepRegisterEBSAMI) orphan(ctx context.Context, state multistep.StateBag) string {
	name := aws.ToString(s.attempted.Name)
	out, err := EBS(state).DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{name}}},
	})
	if err != nil {
		UI(state).Error(fmt.Sprintf("Cannot check whether EC2 registered AMI %q although RegisterImage failed; if it did, deregister it yourself: %s", name, err))
		return ""
	}
	snap := aws.ToString(s.attempted.BlockDeviceMappings[0].Ebs.SnapshotId)
	for _, img := range out.Images {
		for _, m := range img.BlockDeviceMappings {
			if m.Ebs != nil && aws.ToString(m.Ebs.SnapshotId) == snap && img.State != ec2types.ImageStateDeregistered {
				return aws.ToString(img.ImageId)
			}
		}
	}
	return ""
}
