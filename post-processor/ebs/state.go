package ebspp

import (
	"github.com/aws/aws-sdk-go-v2/service/ec2"
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
	keyInstance     = steps.KeyInstance // ec2types.Instance, StepRunSourceInstance's

	keyConfig = "instancestore_ebs_config"
	// keyEC2Full is the *ec2.Client (clients.Ec2Client has no CreateVolume); the
	// shared EBS steps call it as their steps.EBSClient.
	keyEC2Full  = steps.KeyEBSClient
	keySource   = "instancestore_ebs_source" // *sourceImage
	keyVolume   = steps.KeyEBSVolume         // volume id (string)
	keyDevice   = steps.KeyEBSDevice         // attach device name (string)
	keySnapshot = steps.KeyEBSSnapshot       // snapshot id (string)
	keyAMI      = steps.KeyEBSAMI            // the new AMI id (string)
)

func halt(state multistep.StateBag, err error) multistep.StepAction { return steps.Halt(state, err) }

func ui(state multistep.StateBag) packersdk.Ui       { return state.Get(keyUI).(packersdk.Ui) }
func configOf(state multistep.StateBag) *Config      { return state.Get(keyConfig).(*Config) }
func ec2Full(state multistep.StateBag) *ec2.Client   { return state.Get(keyEC2Full).(*ec2.Client) }
func sourceOf(state multistep.StateBag) *sourceImage { return state.Get(keySource).(*sourceImage) }
func stringOf(state multistep.StateBag, key string) string {
	s, _ := state.Get(key).(string)
	return s
}

// failed reports whether the run was cancelled or halted.
func failed(state multistep.StateBag) bool { return steps.Failed(state) }
