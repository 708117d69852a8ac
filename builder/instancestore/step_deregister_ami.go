package instancestore

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// stepDeregisterAMI implements force_deregister: it deregisters the AMIs that already
// have the new AMI's name, in the build region and in ami_regions, and deletes the old
// bundles' S3 objects (manifest and parts) unless keep_bundle_on_deregister is set.
type stepDeregisterAMI struct {
	ForceDeregister bool
	KeepBundle      bool
	PathStyle       bool
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
	bucket, prefix, name, err := parseImageLocation(loc)
	if err != nil {
		ui(state).Error(fmt.Sprintf("Not deleting the bundle of AMI %s: %s", id, err))
		return nil
	}
	b, err := s3bundle.New(*awsConfig(state), r, bucket, prefix, s3bundle.Options{PathStyle: s.PathStyle})
	if err == nil {
		err = b.DeleteBundle(ctx, name)
	}
	if err != nil {
		// The AMI is gone already; its objects may have been removed by hand before.
		ui(state).Error(fmt.Sprintf("Could not delete the bundle of AMI %s (delete s3://%s and its parts yourself if they remain): %s", id, loc, err))
		return nil
	}
	ui(state).Say(fmt.Sprintf("Deleted the bundle s3://%s", loc))
	return nil
}

// parseImageLocation splits an AMI's ImageLocation ("bucket/prefix/name.manifest.xml")
// into bucket, key prefix and bundle name.
func parseImageLocation(loc string) (bucket, prefix, name string, err error) {
	bucket, key, ok := strings.Cut(loc, "/")
	if !ok || bucket == "" || !strings.HasSuffix(key, ".manifest.xml") || path.Base(key) == ".manifest.xml" {
		return "", "", "", fmt.Errorf("image location %q is not bucket/key.manifest.xml", loc)
	}
	prefix, file := path.Split(key)
	return bucket, strings.Trim(prefix, "/"), strings.TrimSuffix(file, ".manifest.xml"), nil
}

func (s *stepDeregisterAMI) Cleanup(multistep.StateBag) {}
