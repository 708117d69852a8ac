//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Config

package bundle

import (
	"fmt"
	"path"
	"time"

	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// Config is the `instancestore-bundle` provisioner's configuration. Authentication
// options are the amazon plugin's (`access_key`, `profile`, `region`, ...); bundle
// options have the names of the `instancestore` builder's.
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`
	// The bundle options every component shares (s3_bucket, account_id, x509_*, ...).
	driver.Options `mapstructure:",squash"`
	// The options of imaging a volume on the instance (bundle_destination, ...).
	driver.VolumeOptions `mapstructure:",squash"`
	// ami_block_device_mappings: over the instance store volumes the instance's
	// metadata service lists (bundle_volume only).
	driver.MappingOptions `mapstructure:",squash"`

	// Bundle this image file on the instance (like `ec2-bundle-image`) instead of
	// imaging a mounted volume.
	BundleImage string `mapstructure:"bundle_image" required:"false"`
	// The mount point on the instance whose filesystem is imaged (like
	// `ec2-bundle-vol --volume`). Defaults to `/`.
	BundleVolume string `mapstructure:"bundle_volume" required:"false"`
	// `hvm` or `paravirtual`. Defaults to `hvm`.
	AMIVirtType string `mapstructure:"ami_virtualization_type" required:"false"`

	// Register the bundle as an AMI of this name. When unset, the bundle is only
	// uploaded (register it later with the manifest location the provisioner prints).
	AMIName string `mapstructure:"ami_name" required:"false"`
	// Description of the registered AMI.
	AMIDescription string `mapstructure:"ami_description" required:"false"`
	// Root device name of the registered AMI. Defaults to `/dev/sda1`.
	AMIRootDeviceName string `mapstructure:"ami_root_device_name" required:"false"`

	// The command that runs the agent (and the final cleanup) as root on the
	// instance, a template with `{{.Path}}`, `{{.Args}}` and `{{.Sudo}}` (true when the
	// SSH user is not root). Defaults to `{{if .Sudo}}sudo -n {{end}}{{.Path}} {{.Args}}`.
	ExecuteCommand string `mapstructure:"execute_command" required:"false"`
	// Directory on the instance in which the agent's private directory is made.
	// Defaults to `/tmp`.
	RemoteFolder string `mapstructure:"remote_folder" required:"false"`
	// How often bundling progress is shown. Defaults to `10s`.
	ProgressInterval time.Duration `mapstructure:"progress_interval" required:"false"`

	ctx interpolate.Context
}

// Prepare decodes and checks the configuration, reporting every problem at once.
func (c *Config) Prepare(raws ...interface{}) error {
	c.ctx.Funcs = awscommon.TemplateFuncs
	if err := config.Decode(c, &config.DecodeOpts{
		PluginType:         "instancestore-bundle",
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter:  &interpolate.RenderFilter{Exclude: []string{"execute_command"}},
	}, raws...); err != nil {
		return err
	}
	var errs *packersdk.MultiError
	add := func(f string, a ...any) { errs = packersdk.MultiErrorAppend(errs, fmt.Errorf(f, a...)) }

	errs = packersdk.MultiErrorAppend(errs, c.AccessConfig.Prepare(&c.PackerConfig)...)

	// The shared bundle options.
	errs = packersdk.MultiErrorAppend(errs, c.Options.Prepare(&c.ctx)...)
	errs = packersdk.MultiErrorAppend(errs, c.VolumeOptions.Prepare()...)
	errs = packersdk.MultiErrorAppend(errs, c.MappingOptions.Prepare(&c.ctx)...)

	if c.BundleImage != "" {
		if !path.IsAbs(c.BundleImage) {
			add("bundle_image %q must be an absolute path on the instance", c.BundleImage)
		}
		if c.BundleVolume != "" || c.BundleSize != 0 || len(c.BundleExclude) > 0 || len(c.BundleInclude) > 0 || c.BundlePartition != driver.PartitionAuto || c.BundleDestination != "" || c.BundleFilter.True() {
			add("bundle_image bundles an existing image file: bundle_volume, bundle_destination, bundle_size, bundle_exclude, bundle_include, bundle_filter and bundle_partition apply to imaging a volume only; remove them")
		}
	}
	for what, p := range map[string]string{"bundle_volume": c.BundleVolume, "remote_folder": c.RemoteFolder} {
		if p != "" && !path.IsAbs(p) {
			add("%s %q must be an absolute path on the instance", what, p)
		}
	}
	if c.AMIArchitecture == "" {
		c.AMIArchitecture = "x86_64"
	}
	if c.AMIVirtType == "" {
		c.AMIVirtType = "hvm"
	}
	if c.AMIVirtType != "hvm" && c.AMIVirtType != "paravirtual" {
		add("ami_virtualization_type must be hvm or paravirtual, got %q", c.AMIVirtType)
	}
	errs = packersdk.MultiErrorAppend(errs, c.Options.CheckVirtualization(c.AMIVirtType)...)
	if c.BundleImage == "" {
		errs = packersdk.MultiErrorAppend(errs, c.VolumeOptions.CheckVirtualization(c.AMIVirtType)...)
	}
	if c.AMIRootDeviceName == "" {
		c.AMIRootDeviceName = "/dev/sda1"
	}
	if c.AMIName == "" && (c.AMIDescription != "") {
		add("ami_description needs ami_name: the AMI is registered only when ami_name is set")
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 10 * time.Second
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	packersdk.LogSecretFilter.Set(c.AccessKey, c.SecretKey, c.Token)
	return nil
}
