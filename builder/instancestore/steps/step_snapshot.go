package steps

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// StepSnapshot snapshots the volume and waits until the snapshot is completed.
// Cleanup deletes the snapshot when the run failed (StepRegisterEBSAMI's Cleanup,
// which runs first, has deregistered the AMI that used it).
type StepSnapshot struct {
	Description string
	// Tags of the snapshot (nil: none).
	Tags func(multistep.StateBag) ([]ec2types.Tag, error)

	snapshot string
}

func (s *StepSnapshot) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	vol := StateString(state, KeyEBSVolume)
	client := EBS(state)
	in := &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)}
	if s.Description != "" {
		in.Description = aws.String(s.Description)
	}
	if s.Tags != nil {
		tags, err := s.Tags(state)
		if err != nil {
			return Halt(state, err)
		}
		if len(tags) > 0 {
			in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot, Tags: tags}}
		}
	}
	out, err := client.CreateSnapshot(ctx, in)
	if err != nil {
		return Haltf(state, "snapshotting volume %s: %w", vol, err)
	}
	s.snapshot = aws.ToString(out.SnapshotId)
	state.Put(KeyEBSSnapshot, s.snapshot)
	UI(state).Sayf("Waiting for snapshot %s of %s to complete...", s.snapshot, vol)
	w := ec2.NewSnapshotCompletedWaiter(client)
	if err := w.Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s.snapshot}}, 2*time.Hour); err != nil {
		return Haltf(state, "waiting for snapshot %s: %w", s.snapshot, err)
	}
	return multistep.ActionContinue
}

func (s *StepSnapshot) Cleanup(state multistep.StateBag) {
	if s.snapshot == "" || !Failed(state) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := EBS(state).DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s.snapshot)}); err != nil {
		UI(state).Error(fmt.Sprintf("Could not delete snapshot %s: %v; delete it yourself", s.snapshot, err))
		return
	}
	UI(state).Sayf("Deleted snapshot %s", s.snapshot)
	s.snapshot = ""
}
