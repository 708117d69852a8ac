package ebspp

import (
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// State bag keys: those shared with packer-plugin-amazon's common steps are theirs.
const (
	keyAccessConfig = steps.KeyAccessConfig
	keyAWSConfig    = steps.KeyAWSConfig
	keyEC2          = steps.KeyEC2
	keyIAM          = "iam"
	keyUI           = steps.KeyUI
	keyRegion       = steps.KeyRegion
	keyError        = steps.KeyError
	keyInstance     = "instance" // ec2types.Instance, StepRunSourceInstance's

	keyConfig = "instancestore_ebs_config"
	// keyEC2Full is the *ec2.Client (clients.Ec2Client has no CreateVolume).
	keyEC2Full  = "instancestore_ebs_ec2"
	keySource   = "instancestore_ebs_source"   // *sourceImage
	keyVolume   = "instancestore_ebs_volume"   // volume id (string)
	keyDevice   = "instancestore_ebs_device"   // attach device name (string)
	keySnapshot = "instancestore_ebs_snapshot" // snapshot id (string)
	keyAMI      = "instancestore_ebs_ami"      // the new AMI id (string)
	keyDetached = "instancestore_ebs_detached" // true once stepDetachVolume detached it
)

func halt(state multistep.StateBag, err error) multistep.StepAction { return steps.Halt(state, err) }

func ui(state multistep.StateBag) packersdk.Ui       { return state.Get(keyUI).(packersdk.Ui) }
func configOf(state multistep.StateBag) *Config      { return state.Get(keyConfig).(*Config) }
func ec2Full(state multistep.StateBag) *ec2.Client   { return state.Get(keyEC2Full).(*ec2.Client) }
func sourceOf(state multistep.StateBag) *sourceImage { return state.Get(keySource).(*sourceImage) }

// instanceOf is the helper instance. StepRunSourceInstance stores an
// ec2types.Instance value; the steps' unit tests store a pointer.
func instanceOf(state multistep.StateBag) *ec2types.Instance {
	switch in := state.Get(keyInstance).(type) {
	case ec2types.Instance:
		return &in
	case *ec2types.Instance:
		return in
	}
	return &ec2types.Instance{}
}
func stringOf(state multistep.StateBag, key string) string {
	s, _ := state.Get(key).(string)
	return s
}

// failed reports whether the run was cancelled or halted.
func failed(state multistep.StateBag) bool { return steps.Failed(state) }
