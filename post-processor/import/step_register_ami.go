package importpp

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/template/config"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// stepRegisterAMI registers the uploaded bundle and waits until the AMI is available.
// On a failed or cancelled run its Cleanup deregisters every AMI made, copies in
// other regions included.
type stepRegisterAMI struct {
	PollingConfig            *awscommon.AWSPollingConfig
	EnableAMIENASupport      config.Trilean
	EnableAMISriovNetSupport bool
	IMDSSupport              string
}

func (s *stepRegisterAMI) input(state multistep.StateBag) *ec2.RegisterImageInput {
	c := configOf(state)
	virt := imageOf(state).Virtualization
	in := &ec2.RegisterImageInput{
		Name:                aws.String(c.AMIName),
		ImageLocation:       aws.String(bundleOf(state).ManifestLocation),
		Architecture:        ec2types.ArchitectureValues(c.AMIArchitecture),
		VirtualizationType:  aws.String(virt),
		RootDeviceName:      aws.String(rootDevice(c, virt)),
		BlockDeviceMappings: driver.EC2Mappings(amiMappings(c)),
	}
	if virt == "paravirtual" {
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
	client := ec2Client(state)
	in := s.input(state)
	ui(state).Say(fmt.Sprintf("Registering AMI %s from s3://%s...", aws.ToString(in.Name), aws.ToString(in.ImageLocation)))
	out, err := client.RegisterImage(ctx, in)
	if err != nil {
		return haltf(state, "registering AMI %q from %s: %w", aws.ToString(in.Name), aws.ToString(in.ImageLocation), err)
	}
	id := aws.ToString(out.ImageId)
	// In the state before the wait, so that a cancel during the wait deregisters it.
	state.Put(keyAMIs, map[string]string{region(state): id})
	ui(state).Say(fmt.Sprintf("AMI: %s", id))
	ui(state).Say("Waiting for the AMI to become available...")
	if err := s.PollingConfig.WaitUntilAMIAvailable(ctx, client, id); err != nil {
		return haltf(state, "waiting for AMI %s to become available: %w", id, err)
	}
	return multistep.ActionContinue
}

func (s *stepRegisterAMI) Cleanup(state multistep.StateBag) {
	images := amis(state)
	if !failed(state) || len(images) == 0 {
		return
	}
	regions := make([]string, 0, len(images))
	for r := range images {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	access := state.Get(keyAccessConfig).(*awscommon.AccessConfig)
	for _, r := range regions {
		id := images[r]
		if id == "" {
			continue
		}
		ui(state).Say(fmt.Sprintf("Deregistering AMI %s in %s (the import did not finish)...", id, r))
		client := ec2Client(state)
		if r != region(state) {
			var err error
			if client, err = awscommon.GetRegionConn(context.Background(), access, r); err != nil {
				ui(state).Error(fmt.Sprintf("Cannot deregister AMI %s in %s, remove it yourself: %s", id, r, err))
				continue
			}
		}
		if _, err := client.DeregisterImage(context.Background(), &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
			ui(state).Error(fmt.Sprintf("Cannot deregister AMI %s in %s, remove it yourself: %s", id, r, err))
		}
	}
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}
