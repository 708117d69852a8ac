package instancestore

import (
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// State bag keys. The first group is shared with packer-plugin-amazon's common steps
// and the Packer SDK, so the names are theirs; the second group is this builder's own.
const (
	keyConfig       = "config"
	keyAccessConfig = "access_config"
	keyAMIConfig    = "ami_config"
	keyAWSConfig    = "aws_config"
	keyEC2          = "ec2v2"
	keyIAM          = "iam"
	keyHook         = "hook"
	keyUI           = "ui"
	keyRegion       = "region"
	keySourceImage  = "source_image"
	keyInstance     = "instance"
	keyAMIs         = "amis"
	keySnapshots    = "snapshots"
	keyIntermediary = "intermediary_image"
	keyGenerated    = "generated_data"
	keyError        = "error"
	keyCommunicator = "communicator"

	// keyAccountID holds the 12-digit account that owns the bundle (string).
	keyAccountID = steps.KeyAccountID
	// keyBucket holds the *s3bundle.Bucket checked by the preflight.
	keyBucket = steps.KeyBucket
	// keyBundle holds the *bundleLocation of the uploaded bundle.
	keyBundle = "instancestore_bundle"
	// keyManifests holds map[region]imageLocation of the finished AMIs.
	keyManifests = steps.KeyManifests
	// keyBundleResult holds the uploaded bundle's *driver.Result (its manifest and
	// key, for ebs_copy).
	keyBundleResult = "instancestore_bundle_result"
)

// bundleLocation says where a bundle's objects are in S3.
type bundleLocation struct {
	Bucket    string
	Prefix    string
	Region    string
	PathStyle bool
	// ManifestLocation is bucket/key of the manifest, RegisterImage's ImageLocation.
	ManifestLocation string
	// Objects are the object names under Prefix, manifest last.
	Objects []string
}

// ImageLocation is the value RegisterImage takes: "bucket/key".
func (b *bundleLocation) ImageLocation() string { return b.ManifestLocation }

// halt records err as the build's error, shows it and stops the build: the one way
// every step of this builder fails.
func halt(state multistep.StateBag, err error) multistep.StepAction { return steps.Halt(state, err) }

// haltf is halt with a formatted error.
func haltf(state multistep.StateBag, format string, a ...any) multistep.StepAction {
	return halt(state, fmt.Errorf(format, a...))
}

// Typed getters. They panic on a missing or mistyped value, which is a programming
// error in the step list, never a user error.

func ui(state multistep.StateBag) packersdk.Ui { return state.Get(keyUI).(packersdk.Ui) }

func configOf(state multistep.StateBag) *Config { return state.Get(keyConfig).(*Config) }

func ec2Client(state multistep.StateBag) clients.Ec2Client {
	return state.Get(keyEC2).(clients.Ec2Client)
}

func awsConfig(state multistep.StateBag) *aws.Config { return state.Get(keyAWSConfig).(*aws.Config) }

func region(state multistep.StateBag) string { return state.Get(keyRegion).(string) }

func sourceImage(state multistep.StateBag) *ec2types.Image {
	return state.Get(keySourceImage).(*ec2types.Image)
}

func instance(state multistep.StateBag) ec2types.Instance {
	return state.Get(keyInstance).(ec2types.Instance)
}

func bucketOf(state multistep.StateBag) *s3bundle.Bucket {
	return state.Get(keyBucket).(*s3bundle.Bucket)
}

func accountID(state multistep.StateBag) string { return state.Get(keyAccountID).(string) }

// amis returns the region -> AMI id map, or nil before any AMI was registered.
func amis(state multistep.StateBag) map[string]string {
	m, _ := state.Get(keyAMIs).(map[string]string)
	return m
}

// bundleOf returns the uploaded bundle, or nil when nothing was uploaded.
func bundleOf(state multistep.StateBag) *bundleLocation {
	b, _ := state.Get(keyBundle).(*bundleLocation)
	return b
}

// failed reports whether the build was cancelled or halted: cleanups then undo what
// they would otherwise leave for the artifact.
func failed(state multistep.StateBag) bool { return steps.Failed(state) }

// bundleInUse returns the AMI that still uses the bundle after a failed build's
// cleanup, or "" when the bundle can go.
func bundleInUse(state multistep.StateBag) string { return steps.BundleInUse(state) }

func manifestLocations(state multistep.StateBag) map[string]string {
	return steps.ManifestLocations(state)
}

// errNoBundle: the register step found no uploaded bundle.
var errNoBundle = errors.New("no bundle was uploaded: nothing to register")
