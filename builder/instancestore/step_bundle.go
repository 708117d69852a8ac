package instancestore

import (
	"context"
	"fmt"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// stepBundle bundles the instance's root volume with the agent and uploads the parts
// and the signed manifest to the bucket (see agent/driver). Its Cleanup deletes the
// uploaded objects when the build fails or is cancelled later on.
//
// Run may run again after a failure (-on-error=ask, "retry"): it then first deletes
// the parts a failed attempt left under the bundle's name (the driver deletes what it
// uploaded, but that can fail too), so that the new bundle has no stale parts beside
// it. On a first attempt nothing is deleted: parts already there are someone else's.
type stepBundle struct {
	GeneratedData *packerbuilderdata.GeneratedData

	uploaded *bundleLocation
	attempts int
	// bundle runs the agent and uploads (driver.Run; tests replace it).
	bundle func(context.Context, driver.Config) (*driver.Result, error)
}

// manifestConfig is what the manifest says besides the bundle itself: the owner, the
// kernel and RAM disk, and the block device mappings (the root device and the
// instance store volumes the new AMI inherits, mappings.go).
func manifestConfig(c *Config, account, rootDevice string, src *ec2types.Image) bundle.ManifestConfig {
	mc := bundle.ManifestConfig{User: account, BlockDeviceMappings: driver.ManifestMappings(rootDevice, amiMappings(c, src))}
	if c.AMIVirtType == "paravirtual" {
		mc.KernelID, mc.RamdiskID = c.AMIKernelId, c.AMIRamdiskId
	}
	return mc
}

// driverConfig turns the builder's options into the driver's.
func driverConfig(c *Config, comm packersdk.Communicator, ui packersdk.Ui, state multistep.StateBag) (driver.Config, error) {
	dc := driver.Config{
		Comm:         comm,
		Ui:           ui,
		Bucket:       bucketOf(state),
		Architecture: c.AMIArchitecture,
		AgentBinary:  c.AgentBinary,
		Manifest:     manifestConfig(c, accountID(state), rootDeviceName(sourceImage(state)), sourceImage(state)),
		// The same mapping as manifestConfig's, and the agent's cross-check with the
		// instance's metadata service: a warning names what differs.
		Mappings: &driver.MappingPlan{
			RootDevice:    rootDeviceName(sourceImage(state)),
			Inherited:     inheritedMappings(c, sourceImage(state)),
			InheritedFrom: inheritedFrom,
			AMI:           c.AMIMappings,
		},
		Job: c.Options.Request(agent.ModeVolume),
	}
	dc.Job.Volume = c.VolumeOptions.VolumeRequest("/")
	var err error
	if dc.Job.Volume.RemoveAuthorizedKeys, err = temporaryPublicKeys(c); err != nil {
		return dc, err
	}
	keys, err := c.Options.Keys()
	if err != nil {
		return dc, err
	}
	dc.EC2Cert, dc.UserCert, dc.UserKey = keys.EC2Cert, keys.UserCert, keys.UserKey
	return dc, nil
}

func (s *stepBundle) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	comm := state.Get(keyCommunicator).(packersdk.Communicator)
	dc, err := driverConfig(c, comm, ui(state), state)
	if err != nil {
		return halt(state, err)
	}
	s.uploaded = nil
	if s.attempts++; s.attempts > 1 {
		if err := s.removeFailedAttempt(ctx, state, c.BundlePrefix); err != nil {
			return halt(state, err)
		}
	}
	ui(state).Say(fmt.Sprintf("Bundling the root volume as %s into %s...", c.BundlePrefix, dc.Bucket))
	run := s.bundle
	if run == nil {
		run = driver.Run
	}
	res, err := run(ctx, dc)
	if err != nil {
		return haltf(state, "bundling the instance: %w", err)
	}
	b := dc.Bucket
	s.uploaded = &bundleLocation{
		Bucket: b.Name, Prefix: b.Prefix, Region: b.Region, PathStyle: c.S3ForcePathStyle,
		ManifestLocation: res.ManifestLocation, Objects: res.Objects,
	}
	state.Put(keyBundle, s.uploaded)
	state.Put(keyBundleResult, res) // the manifest and key: ebs_copy writes the image from them
	s.GeneratedData.Put("BundleManifest", "s3://"+res.ManifestLocation)
	if s.attempts > 1 {
		// Packer's ask step leaves the failed attempt's error in the state: the build
		// would end as failed, and the SDK's cleanups (the error-cleanup-provisioner)
		// would act as after an error.
		state.Remove(keyError)
	}
	return multistep.ActionContinue
}

// removeFailedAttempt deletes the parts of bundle name that an earlier attempt of
// this step left in the bucket. A manifest is never deleted here: the driver refuses
// to overwrite one, and an earlier attempt that got as far as the manifest succeeded.
func (s *stepBundle) removeFailedAttempt(ctx context.Context, state multistep.StateBag, name string) error {
	b := bucketOf(state)
	parts, err := b.List(ctx, name+".part.")
	if err != nil {
		return fmt.Errorf("retrying the bundle: %w", err)
	}
	if len(parts) == 0 {
		return nil
	}
	ui(state).Say(fmt.Sprintf("Retrying: deleting the %d parts the failed attempt left under %s...", len(parts), b))
	if err := b.Delete(ctx, parts); err != nil {
		return fmt.Errorf("retrying the bundle: deleting the failed attempt's parts: %w", err)
	}
	return nil
}

// Cleanup deletes the uploaded bundle when the build did not finish: no AMI uses it.
func (s *stepBundle) Cleanup(state multistep.StateBag) {
	if s.uploaded == nil || !failed(state) {
		return
	}
	if ami := bundleInUse(state); ami != "" {
		ui(state).Error(fmt.Sprintf("Keeping the bundle s3://%s: AMI %s could not be deregistered and still uses it", s.uploaded.ManifestLocation, ami))
		return
	}
	ui(state).Say(fmt.Sprintf("Deleting the bundle s3://%s (the build did not finish)...", s.uploaded.ManifestLocation))
	if err := bucketOf(state).Delete(context.Background(), s.uploaded.Objects); err != nil {
		ui(state).Error(fmt.Sprintf("Could not delete the bundle's objects under s3://%s/%s, delete them yourself: %s", s.uploaded.Bucket, s.uploaded.Prefix, err))
	}
}
