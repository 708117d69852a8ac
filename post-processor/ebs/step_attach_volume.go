package ebspp

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// attachDevice is the name the volume is attached under (/dev/xvdf in a Xen guest,
// an NVMe namespace on Nitro: the agent finds it by the volume id).
const attachDevice = "/dev/sdf"

// stepAttachVolume attaches the volume to the helper and waits until it is in use.
// Cleanup detaches it if it is still attached (a failed or cancelled run).
type stepAttachVolume struct {
	attached string
}

func (s *stepAttachVolume) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	vol := stringOf(state, keyVolume)
	inst := instanceOf(state)
	client := ec2Full(state)
	if _, err := client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: inst.InstanceId, Device: aws.String(attachDevice)}); err != nil {
		return halt(state, fmt.Errorf("attaching volume %s to %s: %w", vol, aws.ToString(inst.InstanceId), err))
	}
	s.attached = vol
	if err := ec2.NewVolumeInUseWaiter(client).Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, 10*time.Minute); err != nil {
		return halt(state, fmt.Errorf("waiting for volume %s to attach: %w", vol, err))
	}
	state.Put(keyDevice, attachDevice)
	ui(state).Sayf("Attached %s to %s as %s", vol, aws.ToString(inst.InstanceId), attachDevice)
	return multistep.ActionContinue
}

func (s *stepAttachVolume) Cleanup(state multistep.StateBag) {
	if s.attached == "" || state.Get(keyDetached) == true {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := detach(ctx, state, s.attached); err != nil {
		ui(state).Error(err.Error())
	}
}

// detach detaches vol (forcing it: the helper is about to go) and waits until it is
// available.
func detach(ctx context.Context, state multistep.StateBag, vol string) error {
	client := ec2Full(state)
	if _, err := client.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		return fmt.Errorf("detaching volume %s: %w", vol, err)
	}
	if err := ec2.NewVolumeAvailableWaiter(client).Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, 10*time.Minute); err != nil {
		return fmt.Errorf("waiting for volume %s to detach: %w", vol, err)
	}
	return nil
}
