// Package steps holds the Packer steps that every component registering a bundle as an
// AMI runs the same way: the builder (builder/instancestore) and the import
// post-processor (post-processor/import). One definition each: the account that owns
// the bundle, the bucket preflight, RegisterImage with the cleanup of a half-made AMI,
// and the manifest locations of the finished AMIs.
//
// It also holds the EBS steps (ebs_state.go) that the builder's ebs_copy and the
// instancestore-ebs post-processor (post-processor/ebs) share: a new volume, attach,
// detach, snapshot and the registration of an EBS-backed AMI, each with the cleanup of
// what it made, and the EBS volume options of both.
//
// They share the state bag with packer-plugin-amazon's common steps, so the first
// group of keys below has the amazon plugin's names.
package steps

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// State bag keys these steps read and write.
const (
	KeyAccessConfig = "access_config" // *awscommon.AccessConfig
	KeyAWSConfig    = "aws_config"    // *aws.Config
	KeyEC2          = "ec2v2"         // clients.Ec2Client
	KeyUI           = "ui"            // packersdk.Ui
	KeyRegion       = "region"        // the build region (string)
	KeyAMIs         = "amis"          // map[region]AMI id
	KeySnapshots    = "snapshots"     // map[region][]snapshot id (none here)
	KeyIntermediary = "intermediary_image"
	KeyError        = "error"

	// KeyAccountID holds the 12-digit account that owns the bundle (string).
	KeyAccountID = "instancestore_account_id"
	// KeyBucket holds the *s3bundle.Bucket checked by the preflight.
	KeyBucket = "instancestore_bucket"
	// KeyImageLocation holds the bucket/key of the manifest RegisterImage was given
	// (string).
	KeyImageLocation = "instancestore_image_location"
	// KeyManifests holds map[region]imageLocation of the finished AMIs.
	KeyManifests = "instancestore_manifests"
	// KeyBundleInUse holds the "id in region" of an AMI a failed run could not
	// deregister: its bundle must stay (string).
	KeyBundleInUse = "instancestore_bundle_in_use"
)

// Halt records err as the run's error, shows it and stops the run: the one way every
// step fails.
func Halt(state multistep.StateBag, err error) multistep.StepAction {
	state.Put(KeyError, err)
	UI(state).Error(err.Error())
	return multistep.ActionHalt
}

// Haltf is Halt with a formatted error.
func Haltf(state multistep.StateBag, format string, a ...any) multistep.StepAction {
	return Halt(state, fmt.Errorf(format, a...))
}

// Typed getters. They panic on a missing or mistyped value, which is a programming
// error in the step list, never a user error.

func UI(state multistep.StateBag) packersdk.Ui { return state.Get(KeyUI).(packersdk.Ui) }

func EC2(state multistep.StateBag) clients.Ec2Client { return state.Get(KeyEC2).(clients.Ec2Client) }

func AWSConfig(state multistep.StateBag) *aws.Config { return state.Get(KeyAWSConfig).(*aws.Config) }

func Region(state multistep.StateBag) string { return state.Get(KeyRegion).(string) }

func Bucket(state multistep.StateBag) *s3bundle.Bucket {
	return state.Get(KeyBucket).(*s3bundle.Bucket)
}

func AccountID(state multistep.StateBag) string { return state.Get(KeyAccountID).(string) }

// AMIs returns the region -> AMI id map, or nil before any AMI was registered.
func AMIs(state multistep.StateBag) map[string]string {
	m, _ := state.Get(KeyAMIs).(map[string]string)
	return m
}

// ManifestLocations is what StepManifestLocations recorded: region -> bucket/key.
func ManifestLocations(state multistep.StateBag) map[string]string {
	m, _ := state.Get(KeyManifests).(map[string]string)
	return m
}

// Failed reports whether the run was cancelled or halted: cleanups then undo what
// they would otherwise leave for the artifact.
func Failed(state multistep.StateBag) bool {
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	return cancelled || halted
}

// keepBundle records that AMI id in r survived a failed run's cleanup, so the bundle
// it was registered from must not be deleted.
func keepBundle(state multistep.StateBag, id, r string) {
	state.Put(KeyBundleInUse, id+" in "+r)
}

// BundleInUse returns the AMI that still uses the bundle after a failed run's cleanup,
// or "" when the bundle can go.
func BundleInUse(state multistep.StateBag) string {
	s, _ := state.Get(KeyBundleInUse).(string)
	return s
}
