//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Config,EBSCopyConfig

package instancestore

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"
	"github.com/hashicorp/packer-plugin-sdk/uuid"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// Config is the `instancestore` builder's configuration. It embeds the amazon plugin's
// access, AMI and run configuration, so authentication, launching and AMI options have
// the same names and behaviour as in the `amazon-ebs` and `amazon-instance` builders.
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`
	awscommon.AMIConfig    `mapstructure:",squash"`
	awscommon.RunConfig    `mapstructure:",squash"`
	// The bundle options every component shares (s3_bucket, account_id, x509_*, ...).
	driver.Options `mapstructure:",squash"`
	// The options of imaging the root volume on the instance (bundle_destination, ...).
	driver.VolumeOptions `mapstructure:",squash"`

	// ami_block_device_mappings: over the source AMI's instance store volumes and
	// launch_block_device_mappings' (mappings.go).
	driver.MappingOptions `mapstructure:",squash"`
	// Block devices attached to the source instance while it is being built. They are
	// not part of the bundle: only the root filesystem is bundled.
	LaunchMappings awscommon.BlockDevices `mapstructure:"launch_block_device_mappings" required:"false"`
	// When `force_deregister` removes an existing AMI of the same name, keep its bundle in
	// S3. By default the old manifest and parts are deleted with it.
	KeepBundleOnDeregister bool `mapstructure:"keep_bundle_on_deregister" required:"false"`

	// Also register an EBS-backed AMI of the very same image, for current (Nitro)
	// instance types; see [EBS copy](#ebs-copy). After the bundle is uploaded, a new
	// volume of the image's size is attached to the source instance, the agent
	// streams the bundle back from S3 onto it (presigned GETs, every part's SHA-1 and
	// the image digest checked, zeros not written, nothing on scratch), and its
	// snapshot is registered. The volume is deleted; the artifact carries both AMIs.
	EBSCopy *EBSCopyConfig `mapstructure:"ebs_copy" required:"false"`

	// Not supported: the `amazon-instance` builder's command that ran Ruby
	// `ec2-bundle-vol` on the instance. This builder bundles with its own agent; use the
	// `bundle_*` options instead.
	BundleVolCommand string `mapstructure:"bundle_vol_command" required:"false"`
	// Not supported: the `amazon-instance` builder's command that ran Ruby
	// `ec2-upload-bundle` with AWS keys on its command line. Parts are now uploaded to
	// presigned URLs and no credentials reach the instance.
	BundleUploadCommand string `mapstructure:"bundle_upload_command" required:"false"`
	// Has no effect: the X.509 key never goes to the instance any more; the manifest is
	// signed on the machine running Packer. Warned about unless it is the amazon
	// plugin's default, `/tmp`.
	X509UploadPath string `mapstructure:"x509_upload_path" required:"false"`
	// Not supported: NitroTPM needs a Nitro instance type, and no instance type that
	// boots instance store-backed AMIs is Nitro-based.
	TpmSupport string `mapstructure:"tpm_support" required:"false"`

	ctx interpolate.Context
	// buildID is this build's value of the BuildTagKey tag.
	buildID string
}

// EBSCopyConfig is the `ebs_copy` block: the EBS-backed copy of the build's image.
type EBSCopyConfig struct {
	// The name of the EBS-backed AMI. It must differ from `ami_name` (an account's AMI
	// names are unique per region). Default `<ami_name>-ebs`.
	AMIName string `mapstructure:"ami_name" required:"false"`
	// The description of the EBS-backed AMI; it may use the build's template data
	// (`{{ .SourceAMI }}`, ...) as `ami_description` does. Default: `ami_description`.
	AMIDescription string `mapstructure:"ami_description" required:"false"`
	// Tags of the EBS-backed AMI and its snapshot, with the template data `tags`
	// has. Default: `tags`.
	AMITags map[string]string `mapstructure:"tags" required:"false"`
	// The volume the image is written onto, and the AMI's root volume.
	steps.EBSVolumeOptions `mapstructure:",squash"`
	// The AMI's root device name. Default `/dev/xvda`.
	RootDeviceName string `mapstructure:"root_device_name" required:"false"`
	// Register the AMI with ENA support, which Nitro instance types need (the image
	// needs the ENA driver to have a network there). Default `true`.
	ENASupport *bool `mapstructure:"ena_support" required:"false"`
}

// DefaultEBSRootDevice is the EBS copy's root device name when root_device_name is
// unset.
const DefaultEBSRootDevice = "/dev/xvda"

// prepare applies the block's defaults and checks it against the build's options.
func (e *EBSCopyConfig) prepare(c *Config) []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	errs = append(errs, e.EBSVolumeOptions.Prepare("ebs_copy.")...)
	if e.AMIName == "" {
		e.AMIName = c.AMIName + "-ebs"
	} else {
		name, err := interpolate.Render(e.AMIName, &c.ctx)
		if err != nil {
			add("ebs_copy.ami_name: %s", err)
		}
		e.AMIName = name
	}
	if e.AMIName == c.AMIName {
		add("ebs_copy.ami_name %q is ami_name too: an account's AMI names are unique in a region; give the EBS copy a name of its own (default: ami_name with -ebs)", e.AMIName)
	}
	if e.AMIDescription == "" {
		e.AMIDescription = c.AMIDescription
	}
	if e.AMITags == nil {
		e.AMITags = c.AMITags
	}
	if e.RootDeviceName == "" {
		e.RootDeviceName = DefaultEBSRootDevice
	}
	if !strings.HasPrefix(e.RootDeviceName, "/dev/") {
		add("ebs_copy.root_device_name %q: want a device name such as /dev/xvda or /dev/sda1", e.RootDeviceName)
	}
	if e.ENASupport == nil {
		e.ENASupport = aws.Bool(true)
	}
	if c.AMIVirtType != "hvm" {
		add("ebs_copy needs ami_virtualization_type = \"hvm\": the EBS copy is for current instance types (Nitro: NVMe root, ENA), which boot hvm AMIs only; convert a paravirtual AMI with the instancestore-ebs post-processor")
	}
	return errs
}

// Defaults that Prepare applies.
const (
	DefaultBundlePrefix   = driver.DefaultBundlePrefix
	DefaultVirtualization = "hvm"
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
				"ebs_copy", // its ami_name in Prepare, the rest with the build's data
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
	errs = packersdk.MultiErrorAppend(errs, c.MappingOptions.Prepare(&c.ctx)...)
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

	// The shared bundle options.
	errs = packersdk.MultiErrorAppend(errs, c.Options.Prepare(&c.ctx)...)
	errs = packersdk.MultiErrorAppend(errs, c.VolumeOptions.Prepare()...)

	// The AMI.
	if c.AMIVirtType == "" {
		c.AMIVirtType = DefaultVirtualization
	}
	switch c.AMIVirtType {
	case "hvm", "paravirtual":
	default:
		add("ami_virtualization_type must be hvm or paravirtual, got %q", c.AMIVirtType)
	}
	errs = packersdk.MultiErrorAppend(errs, c.Options.CheckVirtualization(c.AMIVirtType)...)
	errs = packersdk.MultiErrorAppend(errs, c.VolumeOptions.CheckVirtualization(c.AMIVirtType)...)

	if c.EBSCopy != nil {
		errs = packersdk.MultiErrorAppend(errs, c.EBSCopy.prepare(c)...)
	}

	// The build instance may be of any type that runs the source: an instance store
	// family for an instance store-backed source, any type for an EBS-backed one.
	errs = packersdk.MultiErrorAppend(errs, c.checkSourceKind()...)

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
	// "/tmp" is the amazon plugin's default, so copied templates often carry it.
	if c.X509UploadPath != "" && path.Clean(c.X509UploadPath) != "/tmp" {
		*warns = append(*warns, "x509_upload_path has no effect: the X.509 key is never copied to the instance, the manifest is signed on the machine running Packer; remove it")
	}
	if c.TpmSupport != "" {
		errs = append(errs, errors.New("tpm_support cannot be used: NitroTPM needs a Nitro instance type, and none of the instance types that boot instance store-backed AMIs (c1, c3, d2, i2, m1-m3, r3, x1, ...) is Nitro-based; remove it"))
	}
	if c.Comm.Type == "winrm" {
		errs = append(errs, errors.New("communicator winrm cannot be used: the bundling agent runs on Linux only, and instance store-backed Windows AMIs cannot be made this way; use communicator = \"ssh\" with a Linux source AMI"))
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

// instanceTypes lists the types the build may launch.
func (c *Config) instanceTypes() []string {
	if c.InstanceType != "" {
		return []string{c.InstanceType}
	}
	return c.SpotInstanceTypes
}

// checkSourceKind checks what Prepare can know of the source's kind: a build instance
// of a family that cannot boot instance store-backed AMIs runs only an EBS-backed
// source, and an EBS-backed source (by type or by source_ami_filter) gives an hvm AMI.
// stepCheckSourceAMI checks the source AMI itself.
func (c *Config) checkSourceKind() []error {
	var errs []error
	rootType := ""
	if c.SourceAmiFilter.Filters != nil {
		rootType = c.SourceAmiFilter.Filters["root-device-type"]
	}
	ebsOnly := ""
	for _, t := range c.instanceTypes() {
		if !isInstanceStoreFamily(t) {
			ebsOnly = t
			break
		}
	}
	switch {
	case ebsOnly != "" && rootType == "instance-store":
		errs = append(errs, fmt.Errorf("instance_type %q cannot run the instance store-backed source that source_ami_filter selects (root-device-type = \"instance-store\"): only the families %s boot instance store-backed AMIs; use one of them, or an EBS-backed source (root-device-type = \"ebs\")", ebsOnly, familyNames()))
	case ebsOnly != "" && c.AMIVirtType != "hvm":
		errs = append(errs, fmt.Errorf("instance_type %q runs EBS-backed source AMIs only, and this builder makes hvm AMIs from them: set ami_virtualization_type = \"hvm\", or build on one of the families %s from a paravirtual instance store-backed source", ebsOnly, familyNames()))
	case rootType == "ebs" && c.AMIVirtType != "hvm":
		errs = append(errs, errors.New("source_ami_filter selects an EBS-backed source (root-device-type = \"ebs\"), and this builder makes hvm AMIs from them: set ami_virtualization_type = \"hvm\""))
	}
	return errs
}
