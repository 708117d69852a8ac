package steps

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
)

// StepRegisterAMI registers the uploaded bundle as an AMI in the build region and waits
// until it is available. On a failed or cancelled run its Cleanup deregisters every
// AMI the run made, including copies in other regions, and also the AMI of a
// RegisterImage whose answer was lost (found by name and manifest location).
type StepRegisterAMI struct {
	// Input is what the component registers: name, image location, architecture,
	// virtualization, root device, block device mappings, kernel. The step adds the
	// options below.
	Input func(multistep.StateBag) (*ec2.RegisterImageInput, error)
	// What names the run in messages: "build", "import".
	What string

	PollingConfig            *awscommon.AWSPollingConfig
	EnableAMIENASupport      config.Trilean
	EnableAMISriovNetSupport bool
	IMDSSupport              string

	attempted *ec2.RegisterImageInput
}

// RegisterInput is the RegisterImage request: Input with the step's options.
func (s *StepRegisterAMI) RegisterInput(state multistep.StateBag) (*ec2.RegisterImageInput, error) {
	in, err := s.Input(state)
	if err != nil {
		return nil, err
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
	return in, nil
}

func (s *StepRegisterAMI) what() string {
	if s.What == "" {
		return "run"
	}
	return s.What
}

func (s *StepRegisterAMI) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	in, err := s.RegisterInput(state)
	if err != nil {
		return Halt(state, err)
	}
	client := EC2(state)
	UI(state).Say(fmt.Sprintf("Registering AMI %s from s3://%s...", aws.ToString(in.Name), aws.ToString(in.ImageLocation)))
	state.Put(KeyImageLocation, aws.ToString(in.ImageLocation))

	// EC2 may register the AMI although the response never arrives (a cancel, a
	// dropped connection): Cleanup then looks for it by name and location.
	s.attempted = in
	out, err := client.RegisterImage(ctx, in)
	if err != nil {
		return Haltf(state, "registering AMI %q from %s: %w", aws.ToString(in.Name), aws.ToString(in.ImageLocation), err)
	}
	id := aws.ToString(out.ImageId)
	// Put the AMI in the state before waiting, so that a cancel during the wait still
	// deregisters it.
	state.Put(KeyAMIs, map[string]string{Region(state): id})
	state.Put(KeySnapshots, map[string][]string{})
	state.Put(KeyIntermediary, false)
	UI(state).Say(fmt.Sprintf("AMI: %s", id))

	UI(state).Say("Waiting for the AMI to become available...")
	if err := s.PollingConfig.WaitUntilAMIAvailable(ctx, client, id); err != nil {
		return Haltf(state, "waiting for AMI %s to become available: %w", id, err)
	}
	return multistep.ActionContinue
}

func (s *StepRegisterAMI) Cleanup(state multistep.StateBag) {
	if !Failed(state) {
		return
	}
	images := AMIs(state)
	if images[Region(state)] == "" && s.attempted != nil {
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
	accessConfig := state.Get(KeyAccessConfig).(*awscommon.AccessConfig)
	for _, r := range regions {
		id := images[r]
		if id == "" {
			continue
		}
		UI(state).Say(fmt.Sprintf("Deregistering AMI %s in %s (the %s did not finish)...", id, r, s.what()))
		client := EC2(state)
		if r != Region(state) {
			var err error
			client, err = awscommon.GetRegionConn(context.Background(), accessConfig, r)
			if err != nil {
				keepBundle(state, id, r)
				UI(state).Error(fmt.Sprintf("Cannot deregister AMI %s in %s, remove it yourself: %s", id, r, err))
				continue
			}
		}
		if err := deregisterUnprotected(context.Background(), client, id); err != nil {
			keepBundle(state, id, r)
			UI(state).Error(fmt.Sprintf("Cannot deregister AMI %s in %s, remove it yourself (its bundle is kept): %s", id, r, err))
		}
	}
}

// orphan finds the AMI a RegisterImage without an answer may have made: this
// account's AMI of that name registered from this run's manifest.
func (s *StepRegisterAMI) orphan(state multistep.StateBag) map[string]string {
	out, err := EC2(state).DescribeImages(context.Background(), &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{aws.ToString(s.attempted.Name)}}},
	})
	if err != nil {
		UI(state).Error(fmt.Sprintf("Cannot check whether EC2 registered AMI %q although RegisterImage failed; if it did, deregister it yourself: %s", aws.ToString(s.attempted.Name), err))
		keepBundle(state, aws.ToString(s.attempted.Name), Region(state))
		return nil
	}
	for _, img := range out.Images {
		if aws.ToString(img.ImageLocation) == aws.ToString(s.attempted.ImageLocation) && img.State != ec2types.ImageStateDeregistered {
			return map[string]string{Region(state): aws.ToString(img.ImageId)}
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
