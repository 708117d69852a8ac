package importpp

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// State bag keys: those shared with packer-plugin-amazon's common steps and the
// builder's steps (builder/instancestore/steps) are theirs.
const (
	keyAccessConfig = steps.KeyAccessConfig
	keyAMIConfig    = "ami_config"
	keyAWSConfig    = steps.KeyAWSConfig
	keyEC2          = steps.KeyEC2
	keyUI           = steps.KeyUI
	keyAMIs         = steps.KeyAMIs
	keySnapshots    = steps.KeySnapshots
	keyIntermediary = steps.KeyIntermediary
	keyGenerated    = "generated_data"
	keyError        = steps.KeyError
	keyRegion       = steps.KeyRegion

	keyAccountID = steps.KeyAccountID
	keyBucket    = steps.KeyBucket

	keyConfig = "instancestore_import_config"
	keyImage  = "instancestore_image"
	keyBundle = "instancestore_bundle"
)

// uploadedBundle says where the uploaded bundle's objects are.
type uploadedBundle struct {
	ManifestLocation string   // bucket/key, RegisterImage's ImageLocation
	Objects          []string // names under the bucket's prefix, manifest last
}

func halt(state multistep.StateBag, err error) multistep.StepAction { return steps.Halt(state, err) }

func haltf(state multistep.StateBag, format string, a ...any) multistep.StepAction {
	return halt(state, fmt.Errorf(format, a...))
}

func ui(state multistep.StateBag) packersdk.Ui       { return state.Get(keyUI).(packersdk.Ui) }
func configOf(state multistep.StateBag) *Config      { return state.Get(keyConfig).(*Config) }
func awsConfig(state multistep.StateBag) *aws.Config { return state.Get(keyAWSConfig).(*aws.Config) }
func region(state multistep.StateBag) string         { return state.Get(keyRegion).(string) }
func accountID(state multistep.StateBag) string      { return state.Get(keyAccountID).(string) }
func imageOf(state multistep.StateBag) *imageInfo    { return state.Get(keyImage).(*imageInfo) }
func bucketOf(state multistep.StateBag) *s3bundle.Bucket {
	return state.Get(keyBucket).(*s3bundle.Bucket)
}
func ec2Client(state multistep.StateBag) clients.Ec2Client {
	return state.Get(keyEC2).(clients.Ec2Client)
}

func amis(state multistep.StateBag) map[string]string {
	m, _ := state.Get(keyAMIs).(map[string]string)
	return m
}

func bundleOf(state multistep.StateBag) *uploadedBundle {
	b, _ := state.Get(keyBundle).(*uploadedBundle)
	return b
}

func manifestLocations(state multistep.StateBag) map[string]string {
	return steps.ManifestLocations(state)
}

// failed reports whether the run was cancelled or halted.
func failed(state multistep.StateBag) bool { return steps.Failed(state) }
