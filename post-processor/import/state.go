package importpp

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// State bag keys: the first group is shared with packer-plugin-amazon's common steps,
// so the names are theirs.
const (
	keyAccessConfig = "access_config"
	keyAMIConfig    = "ami_config"
	keyAWSConfig    = "aws_config"
	keyEC2          = "ec2v2"
	keyUI           = "ui"
	keyAMIs         = "amis"
	keySnapshots    = "snapshots"
	keyIntermediary = "intermediary_image"
	keyGenerated    = "generated_data"
	keyError        = "error"

	keyConfig    = "instancestore_import_config"
	keyRegion    = "instancestore_region"
	keyAccountID = "instancestore_account_id"
	keyBucket    = "instancestore_bucket"
	keyImage     = "instancestore_image"
	keyBundle    = "instancestore_bundle"
	keyManifests = "instancestore_manifests"
)

// uploadedBundle says where the uploaded bundle's objects are.
type uploadedBundle struct {
	ManifestLocation string   // bucket/key, RegisterImage's ImageLocation
	Objects          []string // names under the bucket's prefix, manifest last
}

func halt(state multistep.StateBag, err error) multistep.StepAction {
	state.Put(keyError, err)
	ui(state).Error(err.Error())
	return multistep.ActionHalt
}

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
	m, _ := state.Get(keyManifests).(map[string]string)
	return m
}

// failed reports whether the run was cancelled or halted.
func failed(state multistep.StateBag) bool {
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	return cancelled || halted
}
