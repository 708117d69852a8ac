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
type stepBundle struct {
	GeneratedData *packerbuilderdata.GeneratedData

	uploaded *bundleLocation
}

// manifestConfig is what the manifest says besides the bundle itself: the owner, the
// kernel and RAM disk, and the block device mappings (see manifestMappings: the root
// device and the instance store volumes the new AMI inherits, mappings.go).
func manifestConfig(c *Config, account, rootDevice string, src *ec2types.Image) bundle.ManifestConfig {
	mc := bundle.ManifestConfig{User: account, BlockDeviceMappings: manifestMappings(rootDevice, amiMappings(c, src))}
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
		Job: agent.Request{
			Mode:        agent.ModeVolume,
			Name:        c.BundlePrefix,
			Concurrency: c.UploadConcurrency,
			Volume: &agent.VolumeRequest{
				Volume:    "/",
				Scratch:   c.BundleDestination,
				SizeMB:    int64(c.BundleSize),
				Excludes:  c.BundleExclude,
				Includes:  c.BundleInclude,
				Filter:    c.BundleFilter.True(),
				Partition: c.BundlePartition,
			},
		},
	}
	var err error
	if dc.Job.Volume.RemoveAuthorizedKeys, err = temporaryPublicKeys(c); err != nil {
		return dc, err
	}
	if c.X509CertPath != "" {
		if dc.UserCert, err = readCertificate(c.X509CertPath); err != nil {
			return dc, fmt.Errorf("x509_cert_path: %w", err)
		}
		if dc.UserKey, err = readPrivateKey(c.X509KeyPath); err != nil {
			return dc, fmt.Errorf("x509_key_path: %w", err)
		}
	}
	if c.EC2CertPath != "" {
		if dc.EC2Cert, err = readCertificate(c.EC2CertPath); err != nil {
			return dc, fmt.Errorf("ec2_cert_path: %w", err)
		}
	}
	return dc, nil
}

func (s *stepBundle) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	comm := state.Get(keyCommunicator).(packersdk.Communicator)
	dc, err := driverConfig(c, comm, ui(state), state)
	if err != nil {
		return halt(state, err)
	}
	ui(state).Say(fmt.Sprintf("Bundling the root volume as %s into %s...", c.BundlePrefix, dc.Bucket))
	res, err := driver.Run(ctx, dc)
	if err != nil {
		return haltf(state, "bundling the instance: %w", err)
	}
	b := dc.Bucket
	s.uploaded = &bundleLocation{
		Bucket: b.Name, Prefix: b.Prefix, Region: b.Region, PathStyle: c.S3ForcePathStyle,
		ManifestLocation: res.ManifestLocation, Objects: res.Objects,
	}
	state.Put(keyBundle, s.uploaded)
	s.GeneratedData.Put("BundleManifest", "s3://"+res.ManifestLocation)
	return multistep.ActionContinue
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
