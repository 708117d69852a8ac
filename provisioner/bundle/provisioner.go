// Package bundle is the `instancestore-bundle` provisioner: it bundles the machine the
// communicator is connected to (any builder: `null` against an existing instance, or
// a builder's own instance) into an EC2 instance-store bundle in S3, with the plugin's
// agent, and optionally registers it as an AMI.
package bundle

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/hcl/v2/hcldec"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	format "github.com/instancestore/packer-plugin-instancestore/bundle"
)

// Provisioner is the `instancestore-bundle` provisioner.
type Provisioner struct {
	config Config
}

var _ packersdk.Provisioner = new(Provisioner)

// ConfigSpec implements packersdk.Provisioner.
func (p *Provisioner) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

// Prepare implements packersdk.Provisioner.
func (p *Provisioner) Prepare(raws ...interface{}) error { return p.config.Prepare(raws...) }

// Provision implements packersdk.Provisioner: preflight the bucket, bundle and upload
// through the agent, then register the AMI when ami_name is set.
func (p *Provisioner) Provision(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, generatedData map[string]interface{}) error {
	c := &p.config
	awsCfg, err := c.AccessConfig.Config(ctx)
	if err != nil {
		return err
	}
	// Credentials from the environment or a profile are secrets too, not only those
	// written in the template.
	if creds, err := awsCfg.Credentials.Retrieve(ctx); err == nil {
		packersdk.LogSecretFilter.Set(creds.SecretAccessKey, creds.SessionToken)
	}
	region := awsCfg.Region
	if region == "" {
		return fmt.Errorf("no AWS region: set region (the bundle's bucket and the AMI must be in it)")
	}
	b, err := c.Options.PreflightBucket(ctx, *awsCfg, region, ui.Say)
	if err != nil {
		return err
	}
	account, err := c.Options.Account(ctx, *awsCfg)
	if err != nil {
		return err
	}
	ui.Sayf("Bundling for account %s", account)
	keys, err := c.Options.Keys()
	if err != nil {
		return err
	}

	dcfg := driver.Config{
		Comm: comm, Ui: ui, Bucket: b,
		Architecture:     c.AMIArchitecture,
		AgentBinary:      c.AgentBinary,
		ExecuteCommand:   c.ExecuteCommand,
		RemoteFolder:     c.RemoteFolder,
		ProgressInterval: c.ProgressInterval,
		Manifest:         format.ManifestConfig{User: account, KernelID: c.AMIKernelId, RamdiskID: c.AMIRamdiskId},
		Mappings:         mappingPlan(c),
		EC2Cert:          keys.EC2Cert, UserCert: keys.UserCert, UserKey: keys.UserKey,
	}
	if c.BundleImage != "" {
		dcfg.Job = c.Options.Request(agent.ModeImage)
		dcfg.Job.Image = c.BundleImage
	} else {
		dcfg.Job = c.Options.Request(agent.ModeVolume)
		dcfg.Job.Volume = c.VolumeOptions.VolumeRequest(c.BundleVolume)
		if dcfg.Job.Volume.RemoveAuthorizedKeys, err = temporaryPublicKeys(generatedData); err != nil {
			return err
		}
	}
	res, err := driver.Run(ctx, dcfg)
	if errors.Is(err, driver.ErrAgentDidNotStart) {
		return fmt.Errorf("%w; check execute_command and remote_folder", err)
	}
	if err != nil {
		return err
	}
	ui.Sayf("Manifest: %s", res.ManifestLocation)
	if c.AMIName == "" {
		return nil
	}

	// NewEC2Client honours custom_endpoint_ec2, as the builder's client does.
	ec2c, err := c.AccessConfig.NewEC2Client(ctx)
	if err != nil {
		return fmt.Errorf("creating the EC2 client: %w (the bundle stays in S3 at %s)", err, res.ManifestLocation)
	}
	in := &ec2.RegisterImageInput{
		Name:               aws.String(c.AMIName),
		ImageLocation:      aws.String(res.ManifestLocation),
		Architecture:       ec2types.ArchitectureValues(c.AMIArchitecture),
		VirtualizationType: aws.String(c.AMIVirtType),
		RootDeviceName:     aws.String(c.AMIRootDeviceName),
		// The manifest's mapping: the instance's instance store volumes and
		// ami_block_device_mappings.
		BlockDeviceMappings: driver.EC2Mappings(res.Mappings),
	}
	if c.AMIDescription != "" {
		in.Description = aws.String(c.AMIDescription)
	}
	if c.AMIKernelId != "" {
		in.KernelId = aws.String(c.AMIKernelId)
	}
	if c.AMIRamdiskId != "" {
		in.RamdiskId = aws.String(c.AMIRamdiskId)
	}
	out, err := ec2c.RegisterImage(ctx, in)
	if err != nil {
		return fmt.Errorf("registering AMI %q from %s: %w (the bundle stays in S3)", c.AMIName, res.ManifestLocation, err)
	}
	id := aws.ToString(out.ImageId)
	ui.Sayf("Registered AMI %s (%s); waiting for it to become available...", id, c.AMIName)
	polling := c.PollingConfig
	if polling == nil {
		polling = new(awscommon.AWSPollingConfig)
	}
	if err := polling.WaitUntilAMIAvailable(ctx, ec2c, id); err != nil {
		return fmt.Errorf("waiting for AMI %s to become available: %w (it stays registered; deregister it if it failed)", id, err)
	}
	ui.Sayf("AMI %s is available", id)
	return nil
}

// mappingPlan is how the new AMI's block device mapping is computed: it inherits the
// instance store volumes the instance's metadata service lists (the agent reads it
// when imaging a volume; a bundle_image has none), then ami_block_device_mappings
// applies by device name.
func mappingPlan(c *Config) *driver.MappingPlan {
	return &driver.MappingPlan{RootDevice: c.AMIRootDeviceName, FromInstance: true, AMI: c.AMIMappings}
}
