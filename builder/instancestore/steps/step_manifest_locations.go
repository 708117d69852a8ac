package steps

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/retry"
)

// StepManifestLocations records, for every region, the manifest location EC2 reports
// for the finished AMI (a copy in another region has its own), for the artifact.
//
// The AMIs are registered and available by now, so this step never fails the run:
// DescribeImages is retried, and when EC2 still does not answer the artifact carries
// what the build knows (the build region's manifest, as registered) and a warning says so.
type StepManifestLocations struct {
	// Tries and Delay bound the retries of DescribeImages; zero means 6 tries with a
	// backoff from 1s to 15s.
	Tries int
	Delay time.Duration
}

func (s *StepManifestLocations) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	accessConfig := state.Get(KeyAccessConfig).(*awscommon.AccessConfig)
	images := AMIs(state)
	regions := make([]string, 0, len(images))
	for r := range images {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	locs := make(map[string]string, len(images))
	for _, r := range regions {
		loc, err := s.describe(ctx, state, accessConfig, r, images[r])
		if err != nil {
			if r == Region(state) {
				loc, _ = state.Get(KeyImageLocation).(string)
			}
			UI(state).Error(fmt.Sprintf("Warning: AMI %s in %s is registered, but its manifest location could not be read back (%s); the artifact uses %q", images[r], r, err, loc))
		}
		if loc != "" {
			locs[r] = loc
			UI(state).Message(fmt.Sprintf("%s: %s from %s", r, images[r], loc))
		}
	}
	state.Put(KeyManifests, locs)
	return multistep.ActionContinue
}

// describe returns the ImageLocation EC2 reports for AMI id in region r.
func (s *StepManifestLocations) describe(ctx context.Context, state multistep.StateBag, accessConfig *awscommon.AccessConfig, r, id string) (string, error) {
	tries, delay := s.Tries, s.Delay
	if tries == 0 {
		tries = 6
	}
	backoff := (&retry.Backoff{InitialBackoff: time.Second, MaxBackoff: 15 * time.Second, Multiplier: 2}).Linear
	if delay != 0 {
		backoff = func() time.Duration { return delay }
	}
	var loc string
	err := retry.Config{Tries: tries, RetryDelay: backoff}.Run(ctx, func(ctx context.Context) error {
		var client clients.Ec2Client = EC2(state)
		if r != Region(state) {
			var err error
			if client, err = awscommon.GetRegionConn(ctx, accessConfig, r); err != nil {
				return fmt.Errorf("connecting to %s to describe AMI %s: %w", r, id, err)
			}
		}
		out, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		if err != nil {
			return fmt.Errorf("describing AMI %s in %s: %w", id, r, err)
		}
		if len(out.Images) != 1 {
			return fmt.Errorf("AMI %s in %s: DescribeImages found %d images", id, r, len(out.Images))
		}
		loc = aws.ToString(out.Images[0].ImageLocation)
		return nil
	})
	return loc, err
}

func (s *StepManifestLocations) Cleanup(multistep.StateBag) {}
