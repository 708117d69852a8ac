package steps

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// StepCreateVolume creates the empty volume the image is written onto, in the
// instance's availability zone, of the image's size (rounded up to GiB) or
// volume_size, and waits until it is available. Cleanup always deletes it: the
// snapshot is what stays.
type StepCreateVolume struct {
	Options *EBSVolumeOptions
	// OptionPrefix is how the user reaches Options, for messages ("ebs_copy.").
	OptionPrefix string
	// ImageSize is the size in bytes of the image that goes onto the volume.
	ImageSize func(multistep.StateBag) (int64, error)
	// Tags of the volume.
	Tags map[string]string
	// UniqueTag, when set, names a tag of Tags whose value only this run uses: a
	// CreateVolume whose answer was lost (a cancel) is then found by it and deleted.
	UniqueTag string

	volume    string
	attempted bool
}

func (s *StepCreateVolume) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	inst, err := Instance(state)
	if err != nil {
		return Halt(state, err)
	}
	imageSize, err := s.ImageSize(state)
	if err != nil {
		return Halt(state, err)
	}
	size, err := s.Options.SizeGiB(s.OptionPrefix, imageSize)
	if err != nil {
		return Halt(state, err)
	}
	in := &ec2.CreateVolumeInput{
		AvailabilityZone: inst.Placement.AvailabilityZone,
		Size:             aws.Int32(size),
		VolumeType:       ec2types.VolumeType(s.Options.VolumeType),
	}
	if len(s.Tags) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: EC2Tags(s.Tags)}}
	}
	client := EBS(state)
	s.attempted = true
	out, err := client.CreateVolume(ctx, in)
	if err != nil {
		return Haltf(state, "creating the %d GiB %s volume in %s: %w", size, s.Options.VolumeType, aws.ToString(inst.Placement.AvailabilityZone), err)
	}
	s.volume = aws.ToString(out.VolumeId)
	state.Put(KeyEBSVolume, s.volume)
	UI(state).Sayf("Creating volume %s (%d GiB, %s)...", s.volume, size, s.Options.VolumeType)
	w := ec2.NewVolumeAvailableWaiter(client)
	if err := w.Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{s.volume}}, 10*time.Minute); err != nil {
		return Haltf(state, "waiting for volume %s to become available: %w", s.volume, err)
	}
	return multistep.ActionContinue
}

func (s *StepCreateVolume) Cleanup(state multistep.StateBag) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vols := []string{s.volume}
	if s.volume == "" {
		if vols = s.lost(ctx, state); len(vols) == 0 {
			return
		}
	}
	client := EBS(state)
	for _, vol := range vols {
		// A failed run may leave it attached: the attach step's Cleanup detached it;
		// a new volume may still be creating.
		w := ec2.NewVolumeAvailableWaiter(client)
		_ = w.Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, 5*time.Minute)
		if _, err := client.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(vol)}); err != nil {
			UI(state).Errorf("Could not delete volume %s: %v; delete it yourself", vol, err)
			continue
		}
		UI(state).Sayf("Deleted volume %s", vol)
	}
	s.volume = ""
}

// lost finds the volume of a CreateVolume that got no answer, by UniqueTag.
func (s *StepCreateVolume) lost(ctx context.Context, state multistep.StateBag) []string {
	v, ok := s.Tags[s.UniqueTag]
	if !s.attempted || s.UniqueTag == "" || !ok {
		return nil
	}
	out, err := EBS(state).DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("tag:" + s.UniqueTag), Values: []string{v}}}})
	if err != nil {
		UI(state).Errorf("Cannot check whether EC2 made a volume although CreateVolume got no answer; look for volumes tagged %s=%s and delete them: %s", s.UniqueTag, v, err)
		return nil
	}
	var ids []string
	for _, vol := range out.Volumes {
		ids = append(ids, aws.ToString(vol.VolumeId))
	}
	return ids
}

// EC2Tags turns a tag map into EC2 tags.
func EC2Tags(m map[string]string) []ec2types.Tag {
	out := make([]ec2types.Tag, 0, len(m))
	for k, v := range m {
		out = append(out, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return out
}
