//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Config

package importpp

import (
	"fmt"
	"os"
	"strings"

	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// Config is the `instancestore-import` post-processor's configuration. It embeds the
// amazon plugin's access and AMI configuration, so authentication and the AMI options
// (ami_name, ami_users, ami_regions, tags, ...) behave as in the amazon builders.
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`
	awscommon.AMIConfig    `mapstructure:",squash"`
	// The bundle options every component shares: s3_bucket, s3_prefix, account_id,
	// bundle_prefix, the X.509 and EC2 certificates, ami_architecture, ami_kernel_id,
	// ami_ramdisk_id, compression and upload concurrency.
	driver.Options `mapstructure:",squash"`

	// Local path of the raw disk or filesystem image to import. When unset, the first
	// file of the previous artifact that ends in `.raw` or `.img` is used. A qcow2 or
	// vmdk image must be converted first (`qemu-img convert -O raw in.qcow2 out.raw`).
	ImagePath string `mapstructure:"image_path" required:"false"`
	// The AMI's root device name. Defaults to `/dev/xvda` for hvm and `/dev/sda1` for
	// paravirtual.
	AMIRootDevice string `mapstructure:"ami_root_device_name" required:"false"`
	// ami_block_device_mappings: over the root device only, as there is no instance
	// to inherit instance store volumes from.
	driver.MappingOptions `mapstructure:",squash"`

	ctx interpolate.Context
}

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
	errs = packersdk.MultiErrorAppend(errs, c.MappingOptions.Prepare(&c.ctx)...)
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
	errs = packersdk.MultiErrorAppend(errs, c.Options.CheckVirtualization(c.AMIVirtType)...)
	if c.AMIArchitecture == "" {
		c.AMIArchitecture = "x86_64"
	}
	if c.AMIRootDevice != "" && !strings.HasPrefix(c.AMIRootDevice, "/dev/") {
		add("ami_root_device_name %q must be a device path such as /dev/xvda or /dev/sda1", c.AMIRootDevice)
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	packersdk.LogSecretFilter.Set(c.AccessKey, c.SecretKey, c.Token)
	return nil
}
