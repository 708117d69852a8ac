package ebspp

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepCreateVolume creates the empty volume the image is written onto, in the
// helper's availability zone, of the image's size (rounded up to GiB) or volume_size.
// Cleanup always deletes it: the snapshot is what stays.
type stepCreateVolume struct {
	volume string
}

func (s *stepCreateVolume) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	src := sourceOf(state)
	inst := instanceOf(state)
	size := int32((src.Manifest.Size + 1<<30 - 1) >> 30)
	if c.VolumeSize > 0 {
		if c.VolumeSize < size {
			return halt(state, fmt.Errorf("volume_size %d GiB is smaller than the %d-byte image: use at least %d", c.VolumeSize, src.Manifest.Size, size))
		}
		size = c.VolumeSize
	}
	out, err := ec2Full(state).CreateVolume(ctx, &ec2.CreateVolumeInput{
		AvailabilityZone: inst.Placement.AvailabilityZone,
		Size:             aws.Int32(size),
		VolumeType:       ec2types.VolumeType(c.VolumeType),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume,
			Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String("packer instancestore-ebs " + aws.ToString(src.Image.ImageId))}}}},
	})
	if err != nil {
		return halt(state, fmt.Errorf("creating the %d GiB volume: %w", size, err))
	}
	s.volume = aws.ToString(out.VolumeId)
	state.Put(keyVolume, s.volume)
	ui(state).Sayf("Creating volume %s (%d GiB, %s)...", s.volume, size, c.VolumeType)
	w := ec2.NewVolumeAvailableWaiter(ec2Full(state))
	if err := w.Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{s.volume}}, 10*time.Minute); err != nil {
		return halt(state, fmt.Errorf("waiting for volume %s: %w", s.volume, err))
	}
	return multistep.ActionContinue
}

func (s *stepCreateVolume) Cleanup(state multistep.StateBag) {
	if s.volume == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client := ec2Full(state)
	// A failed run may leave it attached: the attach step's Cleanup detaches it.
	w := ec2.NewVolumeAvailableWaiter(client)
	_ = w.Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{s.volume}}, 5*time.Minute)
	if _, err := client.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(s.volume)}); err != nil {
		ui(state).Error(fmt.Sprintf("Could not delete volume %s: %v; delete it by hand", s.volume, err))
		return
	}
	ui(state).Sayf("Deleted volume %s", s.volume)
	s.volume = ""
}
