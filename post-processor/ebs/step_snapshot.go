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

// stepSnapshot snapshots the volume and waits until the snapshot is completed.
// Cleanup deletes the snapshot when the run failed (once the AMI is registered, the
// register step's Cleanup deregisters it first).
type stepSnapshot struct {
	snapshot string
}

func (s *stepSnapshot) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	vol := stringOf(state, keyVolume)
	src := sourceOf(state)
	client := ec2Full(state)
	in := &ec2.CreateSnapshotInput{
		VolumeId:    aws.String(vol),
		Description: aws.String("instancestore-ebs: root of " + aws.ToString(src.Image.ImageId)),
	}
	if len(c.AMITags) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot, Tags: tags(c.AMITags)}}
	}
	out, err := client.CreateSnapshot(ctx, in)
	if err != nil {
		return halt(state, fmt.Errorf("snapshotting volume %s: %w", vol, err))
	}
	s.snapshot = aws.ToString(out.SnapshotId)
	state.Put(keySnapshot, s.snapshot)
	ui(state).Sayf("Waiting for snapshot %s...", s.snapshot)
	w := ec2.NewSnapshotCompletedWaiter(client)
	if err := w.Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s.snapshot}}, 2*time.Hour); err != nil {
		return halt(state, fmt.Errorf("waiting for snapshot %s: %w", s.snapshot, err))
	}
	return multistep.ActionContinue
}

func (s *stepSnapshot) Cleanup(state multistep.StateBag) {
	if s.snapshot == "" || !failed(state) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := ec2Full(state).DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s.snapshot)}); err != nil {
		ui(state).Error(fmt.Sprintf("Could not delete snapshot %s: %v; delete it by hand", s.snapshot, err))
		return
	}
	ui(state).Sayf("Deleted snapshot %s", s.snapshot)
}

func tags(m map[string]string) []ec2types.Tag {
	out := []ec2types.Tag{}
	for k, v := range m {
		out = append(out, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return out
}
