// Package bundle is the `instancestore-bundle` provisioner: it bundles the machine the
// communicator is connected to (any builder: `null` against an existing instance, or
// a builder's own instance) into an EC2 instance-store bundle in S3, with the plugin's
// agent, and optionally registers it as an AMI.
package bundle

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/hashicorp/hcl/v2/hcldec"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	format "github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
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
func (p *Provisioner) Provision(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, _ map[string]interface{}) error {
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
	b, err := s3bundle.New(*awsCfg, region, c.S3Bucket, c.S3Prefix, s3bundle.Options{PathStyle: c.S3ForcePathStyle})
	if err != nil {
		return err
	}
	ui.Sayf("Checking %s (region %s, ACLs, upload with aws-exec-read)...", b, region)
	created, err := b.Preflight(ctx, s3bundle.PreflightOptions{Create: c.S3CreateBucket})
	if err != nil {
		return err
	}
	if created {
		ui.Sayf("Created bucket %s in %s", c.S3Bucket, region)
	}

	account := c.AccountId
	if account == "" {
		out, err := sts.NewFromConfig(*awsCfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			return fmt.Errorf("finding the AWS account for the manifest with STS GetCallerIdentity: %w; set account_id", err)
		}
		account = aws.ToString(out.Account)
	}

	dcfg := driver.Config{
		Comm: comm, Ui: ui, Bucket: b,
		Architecture:     c.AMIArchitecture,
		AgentBinary:      c.AgentBinary,
		ExecuteCommand:   c.ExecuteCommand,
		RemoteFolder:     c.RemoteFolder,
		ProgressInterval: c.ProgressInterval,
		Manifest: format.ManifestConfig{
			User: account, KernelID: c.AMIKernelId, RamdiskID: c.AMIRamdiskId,
			BlockDeviceMappings: []format.BlockDeviceMapping{{Virtual: "ami", Device: strings.TrimPrefix(c.AMIRootDeviceName, "/dev/")}, {Virtual: "root", Device: c.AMIRootDeviceName}},
		},
		Job: agent.Request{Name: c.BundlePrefix, Concurrency: c.UploadConcurrency},
	}
	if c.BundleImage != "" {
		dcfg.Job.Mode, dcfg.Job.Image = agent.ModeImage, c.BundleImage
	} else {
		dcfg.Job.Mode = agent.ModeVolume
		dcfg.Job.Volume = &agent.VolumeRequest{Volume: c.BundleVolume, Scratch: c.BundleDestination,
			SizeMB: int64(c.BundleSize), Excludes: c.BundleExclude, Includes: c.BundleInclude,
			Filter: c.BundleFilter.True(), Partition: c.BundlePartition}
	}
	if c.X509CertPath != "" {
		if dcfg.UserCert, dcfg.UserKey, err = loadUser(c.X509CertPath, c.X509KeyPath); err != nil {
			return err
		}
	}
	if c.EC2CertPath != "" {
		if dcfg.EC2Cert, err = format.LoadCertificate(c.EC2CertPath); err != nil {
			return fmt.Errorf("ec2_cert_path: %w", err)
		}
	}

	res, err := driver.Run(ctx, dcfg)
	if err != nil {
		return err
	}
	ui.Sayf("Manifest: %s", res.ManifestLocation)
	if c.AMIName == "" {
		return nil
	}

	ec2c := ec2.NewFromConfig(*awsCfg)
	in := &ec2.RegisterImageInput{
		Name:               aws.String(c.AMIName),
		ImageLocation:      aws.String(res.ManifestLocation),
		Architecture:       ec2types.ArchitectureValues(c.AMIArchitecture),
		VirtualizationType: aws.String(c.AMIVirtType),
		RootDeviceName:     aws.String(c.AMIRootDeviceName),
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
	ui.Sayf("Registered AMI %s (%s)", aws.ToString(out.ImageId), c.AMIName)
	return nil
}

func loadUser(certPath, keyPath string) (*x509.Certificate, *rsa.PrivateKey, error) {
	cert, err := format.LoadCertificate(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("x509_cert_path: %w", err)
	}
	key, err := format.LoadPrivateKey(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("x509_key_path: %w", err)
	}
	return cert, key, nil
}

func statFile(p string) (os.FileInfo, error) { return os.Stat(p) }

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
