//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Config

package importpp

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"

	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/random"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/bundleconfig"
)

// Config is the `instancestore-import` post-processor's configuration. It embeds the
// amazon plugin's access and AMI configuration, so authentication and the AMI options
// (ami_name, ami_users, ami_regions, tags, ...) behave as in the amazon builders.
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`
	awscommon.AMIConfig    `mapstructure:",squash"`
	// account_id, bundle_prefix and bundle_filter, shared with the builder and the
	// provisioner (bundle_filter has no effect here: the image is bundled as it is).
	bundleconfig.Options `mapstructure:",squash"`

	// Local path of the raw disk or filesystem image to import. When unset, the first
	// file of the previous artifact that ends in `.raw` or `.img` is used. A qcow2 or
	// vmdk image must be converted first (`qemu-img convert -O raw in.qcow2 out.raw`).
	ImagePath string `mapstructure:"image_path" required:"false"`
	// The S3 bucket that receives the bundle. It must be in the build region and allow
	// ACLs (the parts carry the `aws-exec-read` canned ACL so that EC2 can read them).
	S3Bucket string `mapstructure:"s3_bucket" required:"true"`
	// The key prefix of the bundle's objects in `s3_bucket`. Defaults to
	// `instancestore/<timestamp>-<random>`, unique per run.
	S3Prefix string `mapstructure:"s3_prefix" required:"false"`
	// Create `s3_bucket` in the build region, with ACLs enabled, when it does not exist.
	S3CreateBucket bool `mapstructure:"s3_create_bucket" required:"false"`
	// Address the bucket in the URL path instead of the host name, for S3-compatible
	// endpoints reached by IP address or a plain host name (AWS_ENDPOINT_URL_S3).
	S3ForcePathStyle bool `mapstructure:"s3_force_path_style" required:"false"`
	// Local path to a PEM X.509 certificate of yours. The bundle's key is also wrapped
	// with it, so you can unbundle the image later with the matching private key. When
	// unset, a throw-away key pair is used and only EC2 can unbundle the image.
	X509CertPath string `mapstructure:"x509_cert_path" required:"false"`
	// Local path to the PEM RSA private key of `x509_cert_path`; it signs the manifest.
	// Required when `x509_cert_path` is set.
	X509KeyPath string `mapstructure:"x509_key_path" required:"false"`
	// Local path to a PEM certificate that replaces the EC2 certificate the bundle's
	// key is wrapped with. Defaults to the certificate embedded for the build region's
	// partition; set it for new partitions or a test environment.
	EC2CertPath string `mapstructure:"ec2_cert_path" required:"false"`
	// The AMI's architecture, `x86_64` or `i386`. Defaults to `x86_64`.
	AMIArchitecture string `mapstructure:"ami_architecture" required:"false"`
	// The kernel (AKI) of a paravirtual AMI. Required when the image is a bare
	// filesystem.
	AMIKernelId string `mapstructure:"ami_kernel_id" required:"false"`
	// The RAM disk (ARI) of a paravirtual AMI.
	AMIRamdiskId string `mapstructure:"ami_ramdisk_id" required:"false"`
	// The AMI's root device name. Defaults to `/dev/xvda` for hvm and `/dev/sda1` for
	// paravirtual.
	AMIRootDevice string `mapstructure:"ami_root_device_name" required:"false"`
	// Block device mappings recorded in the AMI: instance store volumes
	// (`virtual_name = "ephemeral0"`) attached when an instance is launched from it.
	AMIMappings awscommon.BlockDevices `mapstructure:"ami_block_device_mappings" required:"false"`
	// How many parts are uploaded at once. Defaults to 4.
	UploadConcurrency int `mapstructure:"upload_concurrency" required:"false"`

	ctx interpolate.Context
}

var (
	reBucket   = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	reS3Prefix = regexp.MustCompile(`^[A-Za-z0-9!_.*'()/-]+$`)
)

// Prepare decodes raws into c, applies defaults and checks every option, returning all
// problems at once. What needs the image (its type, its size) is checked in
// PostProcess, when the input is known.
func (c *Config) Prepare(raws ...interface{}) error {
	c.ctx.Funcs = awscommon.TemplateFuncs
	err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderId,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter: &interpolate.RenderFilter{
			Exclude: []string{"ami_description", "tags", "tag"},
		},
	}, raws...)
	if err != nil {
		return err
	}
	var errs *packersdk.MultiError
	add := func(format string, a ...any) {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf(format, a...))
	}
	if c.PackerForce {
		c.AMIForceDeregister = true
	}
	errs = packersdk.MultiErrorAppend(errs, c.AccessConfig.Prepare(&c.PackerConfig)...)
	errs = packersdk.MultiErrorAppend(errs, c.AMIMappings.Prepare(&c.ctx)...)
	errs = packersdk.MultiErrorAppend(errs, c.AMIConfig.Prepare(&c.AccessConfig, &c.ctx)...)
	errs = packersdk.MultiErrorAppend(errs, c.Options.Prepare(&c.ctx)...)

	if c.AMIEncryptBootVolume.True() || c.AMIKmsKeyId != "" || len(c.AMIRegionKMSKeyIDs) > 0 {
		add("encrypt_boot, kms_key_id and region_kms_key_ids cannot be used: an instance store-backed AMI has no EBS volume to encrypt (its bundle is always encrypted); remove them")
	}
	if len(c.SnapshotUsers) > 0 || len(c.SnapshotGroups) > 0 || len(c.SnapshotTags) > 0 || len(c.SnapshotTag) > 0 {
		add("snapshot_users, snapshot_groups, snapshot_tags and snapshot_tag cannot be used: an instance store-backed AMI has no EBS snapshots")
	}
	if c.AMISkipBuildRegion {
		add("skip_save_build_region cannot be used: the AMI is registered from its bundle in the build region")
	}

	switch {
	case c.S3Bucket == "":
		add("s3_bucket is required: the S3 bucket that receives the bundle")
	case !reBucket.MatchString(c.S3Bucket) || strings.Contains(c.S3Bucket, ".."):
		add("s3_bucket %q is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens", c.S3Bucket)
	}
	if c.S3Prefix == "" {
		ts, err := interpolate.Render("{{timestamp}}", &c.ctx)
		if err != nil {
			ts = "import"
		}
		c.S3Prefix = "instancestore/" + ts + "-" + random.AlphaNumLower(8)
	} else {
		c.S3Prefix = strings.Trim(c.S3Prefix, "/")
		if c.S3Prefix == "" || !reS3Prefix.MatchString(c.S3Prefix) || path.Clean(c.S3Prefix) != c.S3Prefix || strings.HasPrefix(c.S3Prefix, "..") {
			add("s3_prefix %q is not a clean S3 key prefix: use letters, digits and !_.*'()- separated by single slashes", c.S3Prefix)
		}
	}

	switch {
	case (c.X509CertPath == "") != (c.X509KeyPath == ""):
		add("x509_cert_path and x509_key_path must be set together (or both left unset to use a throw-away key pair)")
	case c.X509CertPath != "":
		cert, err := bundle.LoadCertificate(c.X509CertPath)
		if err != nil {
			add("x509_cert_path: %s", err)
		}
		key, err := bundle.LoadPrivateKey(c.X509KeyPath)
		if err != nil {
			add("x509_key_path: %s", err)
		}
		if cert != nil && key != nil {
			if err := bundle.MatchKey(cert, key); err != nil {
				add("x509_key_path %s: %s", c.X509KeyPath, err)
			}
		}
	}
	if c.EC2CertPath != "" {
		if _, err := bundle.LoadCertificate(c.EC2CertPath); err != nil {
			add("ec2_cert_path: %s", err)
		}
	}
	if c.ImagePath != "" {
		if st, err := os.Stat(c.ImagePath); err != nil {
			add("image_path: %s", err)
		} else if !st.Mode().IsRegular() {
			add("image_path %s is not a regular file: give a raw disk or filesystem image", c.ImagePath)
		}
	}

	// ami_virtualization_type (the amazon AMI option) defaults to what the image is: a
	// partition table is hvm, a bare filesystem paravirtual. A value that contradicts
	// the image is refused once the image is known.
	switch c.AMIVirtType {
	case "", "hvm", "paravirtual":
	default:
		add("ami_virtualization_type must be hvm or paravirtual (or unset to decide from the image), got %q", c.AMIVirtType)
	}
	if c.AMIVirtType == "hvm" && (c.AMIKernelId != "" || c.AMIRamdiskId != "") {
		add("ami_kernel_id and ami_ramdisk_id apply to paravirtual AMIs only; remove them or set ami_virtualization_type = \"paravirtual\"")
	}
	if c.AMIArchitecture == "" {
		c.AMIArchitecture = "x86_64"
	}
	switch c.AMIArchitecture {
	case "x86_64", "i386":
	default:
		add("ami_architecture must be x86_64 or i386, got %q", c.AMIArchitecture)
	}
	if c.AMIRootDevice != "" && !strings.HasPrefix(c.AMIRootDevice, "/dev/") {
		add("ami_root_device_name %q must be a device path such as /dev/xvda or /dev/sda1", c.AMIRootDevice)
	}
	for _, bd := range c.AMIMappings {
		if bd.SnapshotId != "" || bd.VolumeSize != 0 || bd.VolumeType != "" || bd.KmsKeyId != "" || bd.Encrypted.True() {
			add("ami_block_device_mappings %s: EBS volumes in an instance store-backed AMI are not supported; map instance store volumes with virtual_name (ephemeral0, ...)", bd.DeviceName)
		}
	}
	if c.UploadConcurrency < 0 || c.UploadConcurrency > 64 {
		add("upload_concurrency %d is out of range: 1 to 64 parts at once (0 for the default, 4)", c.UploadConcurrency)
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	packersdk.LogSecretFilter.Set(c.AccessKey, c.SecretKey, c.Token)
	return nil
}
