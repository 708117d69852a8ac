//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Config

package instancestore

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
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
	"github.com/hashicorp/packer-plugin-sdk/uuid"

	"github.com/instancestore/packer-plugin-instancestore/internal/bundleconfig"
)

// Config is the `instancestore` builder's configuration. It embeds the amazon plugin's
// access, AMI and run configuration, so authentication, launching and AMI options have
// the same names and behaviour as in the `amazon-ebs` and `amazon-instance` builders.
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`
	awscommon.AMIConfig    `mapstructure:",squash"`
	awscommon.RunConfig    `mapstructure:",squash"`
	// account_id, bundle_prefix and bundle_filter, shared with the provisioner.
	bundleconfig.Options `mapstructure:",squash"`

	// Block device mappings recorded in the AMI, such as instance store volumes
	// (`virtual_name = "ephemeral0"`) attached when an instance is launched from it.
	// See [Block Devices Configuration](#block-devices-configuration) for the fields.
	// The root device of an instance store-backed AMI is always the bundled image.
	AMIMappings awscommon.BlockDevices `mapstructure:"ami_block_device_mappings" required:"false"`
	// Block devices attached to the source instance while it is being built. They are
	// not part of the bundle: only the root filesystem is bundled.
	LaunchMappings awscommon.BlockDevices `mapstructure:"launch_block_device_mappings" required:"false"`
	// The S3 bucket that receives the bundle. It must exist, be in the build region and
	// allow ACLs (the parts are uploaded with the `aws-exec-read` canned ACL so that EC2
	// can read them).
	S3Bucket string `mapstructure:"s3_bucket" required:"true"`
	// The key prefix of the bundle's objects in `s3_bucket`. Defaults to
	// `instancestore/<timestamp>-<random>`, unique per build, so parallel builds never
	// overwrite each other's parts.
	S3Prefix string `mapstructure:"s3_prefix" required:"false"`
	// Local path to a PEM X.509 certificate of yours. The bundle's key is also wrapped
	// with it, so you can unbundle the image later with the matching private key. When
	// unset, a throw-away key pair is used and the bundle can be unbundled by EC2 only.
	X509CertPath string `mapstructure:"x509_cert_path" required:"false"`
	// Local path to the PEM RSA private key of `x509_cert_path`. It signs the manifest
	// on the machine running Packer and is never copied to the instance. Required when
	// `x509_cert_path` is set.
	X509KeyPath string `mapstructure:"x509_key_path" required:"false"`
	// Local path to a PEM certificate that replaces the EC2 certificate the bundle's key
	// is wrapped with. By default the certificate embedded for the build region's
	// partition is used (AWS, AWS GovCloud or AWS China); set this for new partitions or
	// for a test environment.
	EC2CertPath string `mapstructure:"ec2_cert_path" required:"false"`
	// Scratch directory on the instance that holds the sparse image of the root volume
	// while it is bundled. It needs free space for the data of the root volume (not for
	// the encrypted bundle: parts stream straight to S3) and is excluded from the image.
	// Defaults to a mounted instance store volume with enough room, else `/tmp`.
	BundleDestination string `mapstructure:"bundle_destination" required:"false"`
	// Size of the bundled image in MiB. Defaults to the size of the root volume. At most
	// 10240 (10 GiB), the limit EC2 sets for instance store-backed AMIs.
	BundleSize int `mapstructure:"bundle_size" required:"false"`
	// Absolute paths on the instance left out of the image, in addition to the bundler's
	// own files, `bundle_destination`, Packer's temporary SSH key and the virtual
	// filesystems (/proc, /sys, /dev contents, ...).
	BundleExclude []string `mapstructure:"bundle_exclude" required:"false"`
	// Absolute paths on the instance to put back into the image although an exclude or
	// the filter would leave them out.
	BundleInclude []string `mapstructure:"bundle_include" required:"false"`
	// How the image of an `hvm` AMI is laid out: `mbr` (partition table and boot code
	// copied from the source disk), `gpt`, or `none` (a bare filesystem, as paravirtual
	// AMIs use). Defaults to `mbr` for `hvm` and `none` for `paravirtual`.
	BundlePartition string `mapstructure:"bundle_partition" required:"false"`
	// The AMI's architecture, `x86_64` or `i386`. Defaults to the source AMI's.
	AMIArchitecture string `mapstructure:"ami_architecture" required:"false"`
	// The kernel (AKI) registered with a paravirtual AMI. Defaults to the source AMI's.
	AMIKernelId string `mapstructure:"ami_kernel_id" required:"false"`
	// The RAM disk (ARI) registered with a paravirtual AMI. Defaults to the source AMI's.
	AMIRamdiskId string `mapstructure:"ami_ramdisk_id" required:"false"`
	// When `force_deregister` removes an existing AMI of the same name, keep its bundle in
	// S3. By default the old manifest and parts are deleted with it.
	KeepBundleOnDeregister bool `mapstructure:"keep_bundle_on_deregister" required:"false"`
	// Create `s3_bucket` in the build region, with ACLs enabled, when it does not exist.
	S3CreateBucket bool `mapstructure:"s3_create_bucket" required:"false"`
	// Address the bucket in the URL path instead of the host name, for S3-compatible
	// endpoints reached by IP address or a plain host name (AWS_ENDPOINT_URL_S3).
	S3ForcePathStyle bool `mapstructure:"s3_force_path_style" required:"false"`
	// How many parts the instance uploads at once. Defaults to 4.
	UploadConcurrency int `mapstructure:"upload_concurrency" required:"false"`
	// Local path to a Linux `instancestore-bundler` executable to run on the instance
	// instead of the agent built into the plugin.
	AgentBinary string `mapstructure:"agent_binary" required:"false"`

	// Not supported: the `amazon-instance` builder's command that ran Ruby
	// `ec2-bundle-vol` on the instance. This builder bundles with its own agent; use the
	// `bundle_*` options instead.
	BundleVolCommand string `mapstructure:"bundle_vol_command" required:"false"`
	// Not supported: the `amazon-instance` builder's command that ran Ruby
	// `ec2-upload-bundle` with AWS keys on its command line. Parts are now uploaded to
	// presigned URLs and no credentials reach the instance.
	BundleUploadCommand string `mapstructure:"bundle_upload_command" required:"false"`
	// Not supported: the X.509 key never goes to the instance any more; the manifest is
	// signed on the machine running Packer.
	X509UploadPath string `mapstructure:"x509_upload_path" required:"false"`

	ctx interpolate.Context
	// buildID is this build's value of the BuildTagKey tag.
	buildID string
}

// Defaults that Prepare applies.
const (
	DefaultBundlePrefix   = bundleconfig.DefaultBundlePrefix
	DefaultVirtualization = "hvm"
	// maxBundleSizeMiB is bundle.MaxImageSize in MiB: EC2 refuses larger images.
	maxBundleSizeMiB = 10240
)

var (
	reAccountID = bundleconfig.ReAccountID
	// S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens.
	reBucket = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	// Characters S3 keys take without escaping.
	reS3Prefix = regexp.MustCompile(`^[A-Za-z0-9!_.*'()/-]+$`)
)

// Prepare decodes raws into c, applies defaults and validates every option, returning
// all problems at once and the warnings for options that have no effect here.
func (c *Config) Prepare(raws ...interface{}) ([]string, error) {
	c.ctx.Funcs = awscommon.TemplateFuncs
	err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderId,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter: &interpolate.RenderFilter{
			// Rendered later, when the build's data (source AMI, ...) is known.
			Exclude: []string{
				"ami_description",
				"fleet_tags",
				"fleet_tag",
				"run_tags",
				"run_tag",
				"tags",
				"tag",
				"spot_tags",
				"spot_tag",
			},
		},
	}, raws...)
	if err != nil {
		return nil, err
	}

	var errs *packersdk.MultiError
	var warns []string
	add := func(format string, a ...any) {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf(format, a...))
	}

	if c.PackerForce {
		c.AMIForceDeregister = true
	}

	// Options of amazon-instance that have no meaning any more, and options of the
	// amazon plugin's shared configuration that mean nothing for an instance
	// store-backed AMI. They are rejected (or warned about) here, then cleared so that
	// the shared Prepare below does not report them a second time in other words.
	errs = packersdk.MultiErrorAppend(errs, c.rejectUnsupported(&warns)...)

	errs = packersdk.MultiErrorAppend(errs, c.AccessConfig.Prepare(&c.PackerConfig)...)
	errs = packersdk.MultiErrorAppend(errs, c.AMIMappings.Prepare(&c.ctx)...)
	errs = packersdk.MultiErrorAppend(errs, c.LaunchMappings.Prepare(&c.ctx)...)
	errs = packersdk.MultiErrorAppend(errs, c.AMIConfig.Prepare(&c.AccessConfig, &c.ctx)...)
	errs = packersdk.MultiErrorAppend(errs, c.RunConfig.Prepare(&c.ctx)...)
	// Every resource the build launches carries the build's tag, so that an
	// interrupted build can find and remove what it made (see stepSweep).
	c.buildID = uuid.TimeOrderedUUID()
	if c.RunTags == nil {
		c.RunTags = map[string]string{}
	}
	c.RunTags[BuildTagKey] = c.buildID

	// account_id, bundle_prefix, bundle_filter
	errs = packersdk.MultiErrorAppend(errs, c.Options.Prepare(&c.ctx)...)

	// s3_bucket, s3_prefix
	switch {
	case c.S3Bucket == "":
		add("s3_bucket is required: the S3 bucket that receives the bundle")
	case !reBucket.MatchString(c.S3Bucket) || strings.Contains(c.S3Bucket, ".."):
		add("s3_bucket %q is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens", c.S3Bucket)
	}
	if c.S3Prefix == "" {
		c.S3Prefix = "instancestore/" + c.uniqueSuffix()
	} else {
		c.S3Prefix = strings.Trim(c.S3Prefix, "/")
		if c.S3Prefix == "" || !reS3Prefix.MatchString(c.S3Prefix) || path.Clean(c.S3Prefix) != c.S3Prefix || strings.HasPrefix(c.S3Prefix, "..") {
			add("s3_prefix %q is not a clean S3 key prefix: use letters, digits and !_.*'()- separated by single slashes, without . or .. segments", c.S3Prefix)
		}
	}

	// X.509 material: both or neither, readable, matching.
	errs = packersdk.MultiErrorAppend(errs, c.prepareX509()...)
	if c.EC2CertPath != "" {
		if _, err := readCertificate(c.EC2CertPath); err != nil {
			add("ec2_cert_path: %s", err)
		}
	}

	// Bundling on the instance.
	// An empty bundle_destination lets the agent pick an instance store volume.
	switch {
	case c.BundleDestination == "":
	case !path.IsAbs(c.BundleDestination):
		add("bundle_destination %q must be an absolute path on the instance", c.BundleDestination)
	default:
		c.BundleDestination = path.Clean(c.BundleDestination)
		if c.BundleDestination == "/" {
			add("bundle_destination must not be / : it is left out of the image, so use a scratch directory such as /tmp or /mnt")
		}
	}
	if c.BundleSize < 0 || c.BundleSize > maxBundleSizeMiB {
		add("bundle_size %d is out of range: give the image size in MiB, 1 to %d (EC2's 10 GiB limit for instance store-backed AMIs)", c.BundleSize, maxBundleSizeMiB)
	}
	for _, p := range c.BundleExclude {
		if !path.IsAbs(p) {
			add("bundle_exclude %q must be an absolute path on the instance", p)
		}
	}
	for _, p := range c.BundleInclude {
		if !path.IsAbs(p) {
			add("bundle_include %q must be an absolute path on the instance", p)
		}
	}
	if c.UploadConcurrency < 0 || c.UploadConcurrency > 64 {
		add("upload_concurrency %d is out of range: 1 to 64 parts at once (0 for the default, 4)", c.UploadConcurrency)
	}
	if c.AgentBinary != "" {
		if _, err := os.Stat(c.AgentBinary); err != nil {
			add("agent_binary: %s", err)
		}
	}

	// The AMI.
	if c.AMIVirtType == "" {
		c.AMIVirtType = DefaultVirtualization
	}
	switch c.AMIVirtType {
	case "hvm", "paravirtual":
	default:
		add("ami_virtualization_type must be hvm or paravirtual, got %q", c.AMIVirtType)
	}
	switch c.BundlePartition {
	case "":
		if c.AMIVirtType == "paravirtual" {
			c.BundlePartition = "none"
		} else {
			c.BundlePartition = "mbr"
		}
	case "mbr", "gpt":
		if c.AMIVirtType == "paravirtual" {
			add("bundle_partition %q does not work with ami_virtualization_type paravirtual: a paravirtual AMI's image is a bare filesystem, use none", c.BundlePartition)
		}
	case "none":
		if c.AMIVirtType == "hvm" {
			add("bundle_partition none does not boot as ami_virtualization_type hvm: an hvm image needs a partition table and boot code, use mbr or gpt")
		}
	default:
		add("bundle_partition must be mbr, gpt or none, got %q", c.BundlePartition)
	}
	switch c.AMIArchitecture {
	case "", "x86_64", "i386":
	default:
		add("ami_architecture must be x86_64 or i386 (the instance types that boot instance store-backed AMIs are all x86), got %q", c.AMIArchitecture)
	}
	if c.AMIVirtType == "hvm" && (c.AMIKernelId != "" || c.AMIRamdiskId != "") {
		add("ami_kernel_id and ami_ramdisk_id apply to paravirtual AMIs only; remove them or set ami_virtualization_type = \"paravirtual\"")
	}
	for _, bd := range c.AMIMappings {
		if bd.SnapshotId != "" || bd.VolumeSize != 0 || bd.VolumeType != "" || bd.KmsKeyId != "" || bd.Encrypted.True() {
			add("ami_block_device_mappings %s: EBS volumes in an instance store-backed AMI are not supported by this builder; map instance store volumes with virtual_name (ephemeral0, ...)", bd.DeviceName)
		}
	}

	// The instance type must be able to boot an instance store-backed AMI.
	for _, t := range c.instanceTypes() {
		if err := checkInstanceType(t); err != nil {
			errs = packersdk.MultiErrorAppend(errs, err)
		}
	}

	if c.IsSpotInstance() && (c.AMIENASupport.True() || c.AMISriovNetSupport || c.EnableNitroEnclave) {
		add("ena_support, sriov_support and enable_nitro_enclave need the instance to be modified, which spot instances do not allow; use an AMI that already has them")
	}
	if c.RunConfig.SpotPriceAutoProduct != "" {
		warns = append(warns, "spot_price_auto_product is deprecated and no longer necessary; remove it")
	}
	if c.RunConfig.EnableT2Unlimited {
		warns = append(warns, "enable_t2_unlimited is deprecated; use enable_unlimited_credits")
	}

	if errs != nil && len(errs.Errors) > 0 {
		return warns, errs
	}
	packersdk.LogSecretFilter.Set(c.AccessKey, c.SecretKey, c.Token)
	return warns, nil
}

// rejectUnsupported reports options that cannot work for this builder and clears them.
func (c *Config) rejectUnsupported(warns *[]string) []error {
	var errs []error
	if c.BundleVolCommand != "" {
		errs = append(errs, errors.New("bundle_vol_command is not supported: this builder bundles the root volume with its own agent instead of Ruby ec2-bundle-vol; remove it and use bundle_destination, bundle_size, bundle_exclude, bundle_include, bundle_filter and bundle_partition"))
	}
	if c.BundleUploadCommand != "" {
		errs = append(errs, errors.New("bundle_upload_command is not supported: the instance uploads each part to a presigned URL issued by Packer, so no ec2-upload-bundle and no AWS keys on the instance; remove it (s3_bucket and s3_prefix choose where the bundle goes)"))
	}
	if c.X509UploadPath != "" {
		errs = append(errs, errors.New("x509_upload_path is not supported: the X.509 key is never copied to the instance, the manifest is signed on the machine running Packer; remove it"))
	}
	if c.AMIEncryptBootVolume.True() {
		errs = append(errs, errors.New("encrypt_boot cannot be used: an instance store-backed AMI has no EBS volume to encrypt (its bundle is always encrypted); remove it or use amazon-ebs"))
	}
	c.AMIEncryptBootVolume = config.TriUnset
	if c.AMIKmsKeyId != "" || len(c.AMIRegionKMSKeyIDs) > 0 {
		errs = append(errs, errors.New("kms_key_id and region_kms_key_ids cannot be used: an instance store-backed AMI has no EBS snapshots to encrypt; remove them"))
	}
	c.AMIKmsKeyId, c.AMIRegionKMSKeyIDs = "", nil
	if len(c.SnapshotUsers) > 0 || len(c.SnapshotGroups) > 0 || len(c.SnapshotTags) > 0 || len(c.SnapshotTag) > 0 || c.AMISnapshotCopyDurationMinutes != nil {
		errs = append(errs, errors.New("snapshot_users, snapshot_groups, snapshot_tags, snapshot_tag and snapshot_copy_duration_minutes cannot be used: an instance store-backed AMI has no EBS snapshots; use ami_users/ami_groups and tags for the AMI"))
	}
	c.SnapshotUsers, c.SnapshotGroups, c.SnapshotTags, c.SnapshotTag, c.AMISnapshotCopyDurationMinutes = nil, nil, nil, nil, nil
	if c.AMISkipBuildRegion {
		errs = append(errs, errors.New("skip_save_build_region cannot be used: an instance store-backed AMI is registered from its bundle in the build region; remove it"))
	}
	if c.InstanceInitiatedShutdownBehavior == "stop" {
		errs = append(errs, errors.New("shutdown_behavior stop is not possible: an instance store-backed instance cannot be stopped, use terminate"))
	}
	if c.InstanceInitiatedShutdownBehavior == "" {
		// The shared default is stop, which EC2 refuses for instance store roots.
		c.InstanceInitiatedShutdownBehavior = "terminate"
	}
	if c.AMIForceDeleteSnapshot {
		*warns = append(*warns, "force_delete_snapshot has no effect: instance store-backed AMIs have no snapshots (force_deregister deletes the old bundle's S3 objects unless keep_bundle_on_deregister is set)")
	}
	if c.DisableStopInstance {
		*warns = append(*warns, "disable_stop_instance has no effect: an instance store-backed instance is never stopped, it is bundled while running and then terminated")
	}
	return errs
}

// prepareX509 checks that x509_cert_path and x509_key_path come together, are readable
// PEM, and belong together.
func (c *Config) prepareX509() []error {
	if (c.X509CertPath == "") != (c.X509KeyPath == "") {
		return []error{errors.New("x509_cert_path and x509_key_path must be set together (or both left unset to use a throw-away key pair)")}
	}
	if c.X509CertPath == "" {
		return nil
	}
	var errs []error
	cert, err := readCertificate(c.X509CertPath)
	if err != nil {
		errs = append(errs, fmt.Errorf("x509_cert_path: %w", err))
	}
	key, err := readPrivateKey(c.X509KeyPath)
	if err != nil {
		errs = append(errs, fmt.Errorf("x509_key_path: %w", err))
	}
	if cert != nil && key != nil {
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok || !pub.Equal(&key.PublicKey) {
			errs = append(errs, fmt.Errorf("x509_key_path %s is not the private key of the certificate in x509_cert_path %s", c.X509KeyPath, c.X509CertPath))
		}
	}
	return errs
}

// instanceTypes lists the types the build may launch.
func (c *Config) instanceTypes() []string {
	if c.InstanceType != "" {
		return []string{c.InstanceType}
	}
	return c.SpotInstanceTypes
}

func (c *Config) uniqueSuffix() string {
	return interpolateOrSelf("{{timestamp}}", &c.ctx) + "-" + random.AlphaNumLower(8)
}

func interpolateOrSelf(s string, ctx *interpolate.Context) string {
	if out, err := interpolate.Render(s, ctx); err == nil {
		return out
	}
	return s
}

func readCertificate(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM CERTIFICATE block", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate %s: %w", file, err)
	}
	if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("certificate %s has no RSA public key (EC2 bundles need RSA)", file)
	}
	return cert, nil
}

func readPrivateKey(file string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", file)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing private key %s: %w", file, err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing private key %s: %w", file, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key %s is not an RSA key", file)
		}
		return rk, nil
	default:
		return nil, fmt.Errorf("%s holds a %q PEM block, want an RSA PRIVATE KEY or PRIVATE KEY", file, block.Type)
	}
}
