package steps

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// DefaultAttachDevice is the name the volume is attached under: /dev/xvdf in a Xen
// guest, an NVMe namespace on Nitro (the agent finds it by the volume id).
const DefaultAttachDevice = "/dev/sdf"

// StepAttachVolume attaches the new volume to the instance and waits until it is in
// use. Cleanup detaches it if it is still attached (a failed or cancelled run).
type StepAttachVolume struct {
	// Device is the attach name (default DefaultAttachDevice).
	Device string

	attached string
}

func (s *StepAttachVolume) device() string {
	if s.Device == "" {
		return DefaultAttachDevice
	}
	return s.Device
}

func (s *StepAttachVolume) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	vol := StateString(state, KeyEBSVolume)
	inst, err := Instance(state)
	if err != nil {
		return Halt(state, err)
	}
	client := EBS(state)
	dev := s.device()
	// Remembered before the call: a cancel may cut the answer off after EC2 attached.
	s.attached = vol
	if _, err := client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: inst.InstanceId, Device: aws.String(dev)}); err != nil {
		return Haltf(state, "attaching volume %s to %s as %s: %w", vol, aws.ToString(inst.InstanceId), dev, err)
	}
	if err := ec2.NewVolumeInUseWaiter(client).Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, 10*time.Minute); err != nil {
		return Haltf(state, "waiting for volume %s to attach: %w", vol, err)
	}
	state.Put(KeyEBSDevice, dev)
	UI(state).Sayf("Attached %s to %s as %s", vol, aws.ToString(inst.InstanceId), dev)
	return multistep.ActionContinue
}

func (s *StepAttachVolume) Cleanup(state multistep.StateBag) {
	if s.attached == "" || state.Get(KeyEBSDetached) == true {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := EBS(state).DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{s.attached}})
	if err == nil && len(out.Volumes) == 1 && len(out.Volumes[0].Attachments) == 0 {
		return // the attach never happened
	}
	if err := Detach(ctx, state, s.attached); err != nil {
		UI(state).Error(err.Error())
	}
}

// Detach detaches vol and waits until it is available again.
func Detach(ctx context.Context, state multistep.StateBag, vol string) error {
	client := EBS(state)
	if _, err := client.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		return fmt.Errorf("detaching volume %s: %w", vol, err)
	}
	if err := ec2.NewVolumeAvailableWaiter(client).Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, 10*time.Minute); err != nil {
		return fmt.Errorf("waiting for volume %s to detach: %w", vol, err)
	}
	return nil
}
