package instancestore

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/template/config"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// stepRegisterAMI registers the uploaded bundle as an AMI in the build region and waits
// until it is available. On a failed or cancelled build its Cleanup deregisters every
// AMI the build made, including copies in other regions.
type stepRegisterAMI struct {
	PollingConfig            *awscommon.AWSPollingConfig
	EnableAMIENASupport      config.Trilean
	EnableAMISriovNetSupport bool
	IMDSSupport              string

	attempted *ec2.RegisterImageInput
}

// rootDeviceName is the root device of the new AMI: the source AMI's, as the image is
// the source instance's root volume.
func rootDeviceName(img *ec2types.Image) string {
	if name := aws.ToString(img.RootDeviceName); name != "" {
		return name
	}
	return "/dev/sda1"
}

func (s *stepRegisterAMI) input(state multistep.StateBag) *ec2.RegisterImageInput {
	c := configOf(state)
	in := &ec2.RegisterImageInput{
		Name:                aws.String(c.AMIName),
		ImageLocation:       aws.String(bundleOf(state).ImageLocation()),
		Architecture:        ec2types.ArchitectureValues(c.AMIArchitecture),
		VirtualizationType:  aws.String(c.AMIVirtType),
		RootDeviceName:      aws.String(rootDeviceName(sourceImage(state))),
		BlockDeviceMappings: driver.EC2Mappings(amiMappings(c, sourceImage(state))),
	}
	if c.AMIVirtType == "paravirtual" {
		in.KernelId = nonEmpty(c.AMIKernelId)
		in.RamdiskId = nonEmpty(c.AMIRamdiskId)
	}
	if s.EnableAMISriovNetSupport {
		in.SriovNetSupport = aws.String("simple")
	}
	if s.EnableAMIENASupport.True() {
		in.EnaSupport = aws.Bool(true)
	}
	if s.IMDSSupport != "" {
		in.ImdsSupport = ec2types.ImdsSupportValues(s.IMDSSupport)
	}
	return in
}

func (s *stepRegisterAMI) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	if bundleOf(state) == nil {
		return haltf(state, "no bundle was uploaded: nothing to register")
	}
	client := ec2Client(state)
	in := s.input(state)
	ui(state).Say(fmt.Sprintf("Registering AMI %s from s3://%s...", aws.ToString(in.Name), aws.ToString(in.ImageLocation)))

	// EC2 may register the AMI although the response never arrives (a cancel, a
	// dropped connection): Cleanup then looks for it by name and location.
	s.attempted = in
	out, err := client.RegisterImage(ctx, in)
	if err != nil {
		return haltf(state, "registering AMI %q from %s: %w", aws.ToString(in.Name), aws.ToString(in.ImageLocation), err)
	}
	id := aws.ToString(out.ImageId)
	// Put the AMI in the state before waiting, so that a cancel during the wait still
	// deregisters it.
	state.Put(keyAMIs, map[string]string{region(state): id})
	state.Put(keySnapshots, map[string][]string{})
	state.Put(keyIntermediary, false)
	ui(state).Say(fmt.Sprintf("AMI: %s", id))

	ui(state).Say("Waiting for the AMI to become available...")
	if err := s.PollingConfig.WaitUntilAMIAvailable(ctx, client, id); err != nil {
		return haltf(state, "waiting for AMI %s to become available: %w", id, err)
	}
	return multistep.ActionContinue
}

func (s *stepRegisterAMI) Cleanup(state multistep.StateBag) {
	if !failed(state) {
		return
	}
	images := amis(state)
	if images[region(state)] == "" && s.attempted != nil {
		images = s.orphan(state)
	}
	if len(images) == 0 {
		return
	}
	regions := make([]string, 0, len(images))
	for r := range images {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	accessConfig := state.Get(keyAccessConfig).(*awscommon.AccessConfig)
	for _, r := range regions {
		id := images[r]
		if id == "" {
			continue
		}
		ui(state).Say(fmt.Sprintf("Deregistering AMI %s in %s (the build did not finish)...", id, r))
		client := ec2Client(state)
		if r != region(state) {
			var err error
			client, err = awscommon.GetRegionConn(context.Background(), accessConfig, r)
			if err != nil {
				keepBundle(state, id, r)
				ui(state).Error(fmt.Sprintf("Cannot deregister AMI %s in %s, remove it yourself: %s", id, r, err))
				continue
			}
		}
		if err := deregisterUnprotected(context.Background(), client, id); err != nil {
			keepBundle(state, id, r)
			ui(state).Error(fmt.Sprintf("Cannot deregister AMI %s in %s, remove it yourself (its bundle is kept): %s", id, r, err))
		}
	}
}

// orphan finds the AMI a RegisterImage without an answer may have made: this
// account's AMI of that name registered from this build's manifest.
func (s *stepRegisterAMI) orphan(state multistep.StateBag) map[string]string {
	out, err := ec2Client(state).DescribeImages(context.Background(), &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{aws.ToString(s.attempted.Name)}}},
	})
	if err != nil {
		ui(state).Error(fmt.Sprintf("Cannot check whether EC2 registered AMI %q although RegisterImage failed; if it did, deregister it yourself: %s", aws.ToString(s.attempted.Name), err))
		keepBundle(state, aws.ToString(s.attempted.Name), region(state))
		return nil
	}
	for _, img := range out.Images {
		if aws.ToString(img.ImageLocation) == aws.ToString(s.attempted.ImageLocation) && img.State != ec2types.ImageStateDeregistered {
			return map[string]string{region(state): aws.ToString(img.ImageId)}
		}
	}
	return nil
}

// deregisterUnprotected turns deregistration protection off first: a failed build
// must not leave a protected AMI (deregistration_protection is enabled last, but a
// cancel can come after it).
func deregisterUnprotected(ctx context.Context, client clients.Ec2Client, id string) error {
	_, err := client.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)})
	if err == nil {
		return nil
	}
	if _, derr := client.DisableImageDeregistrationProtection(ctx, &ec2.DisableImageDeregistrationProtectionInput{ImageId: aws.String(id)}); derr != nil {
		return err
	}
	_, err = client.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)})
	return err
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}
