package importpp

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepManifestLocations records the manifest location EC2 reports for the AMI in
// every region (a copy has its own), for the artifact.
type stepManifestLocations struct{}

func (s *stepManifestLocations) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	access := state.Get(keyAccessConfig).(*awscommon.AccessConfig)
	images := amis(state)
	regions := make([]string, 0, len(images))
	for r := range images {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	locs := make(map[string]string, len(images))
	for _, r := range regions {
		client := ec2Client(state)
		if r != region(state) {
			var err error
			if client, err = awscommon.GetRegionConn(ctx, access, r); err != nil {
				return haltf(state, "connecting to %s to describe AMI %s: %w", r, images[r], err)
			}
		}
		out, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{images[r]}})
		if err != nil {
			return haltf(state, "describing AMI %s in %s: %w", images[r], r, err)
		}
		if len(out.Images) != 1 {
			return haltf(state, "AMI %s in %s: DescribeImages found %d images", images[r], r, len(out.Images))
		}
		locs[r] = aws.ToString(out.Images[0].ImageLocation)
		ui(state).Message(fmt.Sprintf("%s: %s from %s", r, images[r], locs[r]))
	}
	state.Put(keyManifests, locs)
	return multistep.ActionContinue
}

func (s *stepManifestLocations) Cleanup(multistep.StateBag) {}
