package instancestore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepDeregisterAMI implements force_deregister: it deregisters the AMIs that already
// have the new AMI's name, in the build region and in ami_regions, and deletes the old
// bundles' S3 objects (manifest and parts) unless keep_bundle_on_deregister is set.
type stepDeregisterAMI struct {
	ForceDeregister bool
	KeepBundle      bool
	AMIName         string
	Regions         []string
}

func (s *stepDeregisterAMI) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	if !s.ForceDeregister {
		return multistep.ActionContinue
	}
	accessConfig := state.Get(keyAccessConfig).(*awscommon.AccessConfig)
	buildRegion := region(state)
	regions := append([]string{buildRegion}, s.Regions...)
	for _, r := range regions {
		client := ec2Client(state)
		if r != buildRegion {
			var err error
			if client, err = awscommon.GetRegionConn(ctx, accessConfig, r); err != nil {
				return haltf(state, "force_deregister: connecting to %s: %w", r, err)
			}
		}
		out, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{
			Owners:  []string{"self"},
			Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{s.AMIName}}},
		})
		if err != nil {
			return haltf(state, "force_deregister: looking for AMIs named %q in %s: %w", s.AMIName, r, err)
		}
		for _, img := range out.Images {
			if err := s.deregister(ctx, state, client, r, img); err != nil {
				return halt(state, err)
			}
		}
	}
	return multistep.ActionContinue
}

func (s *stepDeregisterAMI) deregister(ctx context.Context, state multistep.StateBag, client clients.Ec2Client, r string, img ec2types.Image) error {
	id := aws.ToString(img.ImageId)
	if _, err := client.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: img.ImageId}); err != nil {
		return fmt.Errorf("force_deregister: deregistering AMI %s (%s) in %s: %w", id, s.AMIName, r, err)
	}
	ui(state).Say(fmt.Sprintf("Deregistered AMI %s (%s) in %s", id, s.AMIName, r))

	if s.KeepBundle || img.RootDeviceType != ec2types.DeviceTypeInstanceStore {
		return nil
	}
	loc := aws.ToString(img.ImageLocation)
	bucket, key, err := parseImageLocation(loc)
	if err != nil {
		ui(state).Error(fmt.Sprintf("Not deleting the bundle of AMI %s: %s", id, err))
		return nil
	}
	s3c := newS3Client(awsConfig(state), r)
	b, err := locateBundle(ctx, s3c, bucket, key)
	if err != nil {
		// The AMI is gone already; its objects may have been removed by hand before.
		ui(state).Error(fmt.Sprintf("Not deleting the bundle of AMI %s (delete s3://%s yourself if it remains): %s", id, loc, err))
		return nil
	}
	if err := deleteObjects(ctx, s3c, b.Bucket, b.Keys()); err != nil {
		ui(state).Error(fmt.Sprintf("Could not delete every object of the bundle of AMI %s: %s", id, err))
		return nil
	}
	ui(state).Say(fmt.Sprintf("Deleted the bundle s3://%s (%d parts)", loc, len(b.PartKeys)))
	return nil
}

func (s *stepDeregisterAMI) Cleanup(multistep.StateBag) {}
