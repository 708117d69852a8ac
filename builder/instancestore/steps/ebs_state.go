package steps

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// The EBS steps (StepCreateVolume, StepAttachVolume, StepDetachVolume, StepSnapshot,
// StepRegisterEBSAMI) write an image onto a new volume of a running instance and
// register its snapshot as an EBS-backed AMI. The builder's ebs_copy runs them on the
// source instance, the instancestore-ebs post-processor on its helper instance; what
// writes the volume in between (the agent's restore mode) is the component's step.

// State bag keys of the EBS steps.
const (
	// KeyInstance is the running instance the volume is attached to: packer-plugin-
	// amazon's StepRunSourceInstance puts an ec2types.Instance (a value) there.
	KeyInstance = "instance"
	// KeyEBSClient holds the EBSClient the EBS steps call.
	KeyEBSClient = "instancestore_ebs_ec2"
	// KeyEBSVolume holds the new volume's id (string).
	KeyEBSVolume = "instancestore_ebs_volume"
	// KeyEBSDevice holds the device name the volume is attached as (string).
	KeyEBSDevice = "instancestore_ebs_device"
	// KeyEBSDetached is true once StepDetachVolume detached the volume.
	KeyEBSDetached = "instancestore_ebs_detached"
	// KeyEBSSnapshot holds the snapshot's id (string).
	KeyEBSSnapshot = "instancestore_ebs_snapshot"
	// KeyEBSAMI holds the EBS-backed AMI's id (string).
	KeyEBSAMI = "instancestore_ebs_ami"
)

// EBSClient is what the EBS steps call: *ec2.Client has it (packer-plugin-amazon's
// clients.Ec2Client lacks CreateVolume).
type EBSClient interface {
	ec2.DescribeVolumesAPIClient
	ec2.DescribeSnapshotsAPIClient
	ec2.DescribeImagesAPIClient
	CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	AttachVolume(context.Context, *ec2.AttachVolumeInput, ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
	DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
	CreateSnapshot(context.Context, *ec2.CreateSnapshotInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	RegisterImage(context.Context, *ec2.RegisterImageInput, ...func(*ec2.Options)) (*ec2.RegisterImageOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
}

var _ EBSClient = (*ec2.Client)(nil)

func EBS(state multistep.StateBag) EBSClient { return state.Get(KeyEBSClient).(EBSClient) }

// Instance is the running instance: StepRunSourceInstance stores a value, tests and
// older callers a pointer; both are accepted.
func Instance(state multistep.StateBag) (*ec2types.Instance, error) {
	switch in := state.Get(KeyInstance).(type) {
	case ec2types.Instance:
		return &in, nil
	case *ec2types.Instance:
		return in, nil
	default:
		return nil, fmt.Errorf("no running instance to attach the volume to (state %q holds %T)", KeyInstance, in)
	}
}

// StateString is the string at key, or "".
func StateString(state multistep.StateBag, key string) string {
	s, _ := state.Get(key).(string)
	return s
}
