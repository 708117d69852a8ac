//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Config

package bundle

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	format "github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/bundleconfig"
)

// Config is the `instancestore-bundle` provisioner's configuration. Authentication
// options are the amazon plugin's (`access_key`, `profile`, `region`, ...); bundle
// options have the names of the `instancestore` builder's.
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`
	// account_id, bundle_prefix and bundle_filter, shared with the builder.
	bundleconfig.Options `mapstructure:",squash"`

	// The S3 bucket that receives the bundle. It must be in `region` and allow ACLs
	// (every object is uploaded with the `aws-exec-read` canned ACL so that EC2 can read
	// it); this is checked before anything runs on the instance.
	S3Bucket string `mapstructure:"s3_bucket" required:"true"`
	// The key prefix of the bundle's objects in `s3_bucket`. Defaults to
	// `instancestore/<timestamp>-<random>`, unique per build.
	S3Prefix string `mapstructure:"s3_prefix" required:"false"`
	// Create `s3_bucket` in `region` (with ACLs enabled) when it does not exist.
	S3CreateBucket bool `mapstructure:"s3_create_bucket" required:"false"`
	// Address S3 with the bucket in the path instead of the host name, for
	// S3-compatible endpoints (`AWS_ENDPOINT_URL_S3`).
	S3ForcePathStyle bool `mapstructure:"s3_force_path_style" required:"false"`
	// Local path to a PEM X.509 certificate of yours: the bundle's key is also wrapped
	// with it, so that you can unbundle the image later. When unset, a throw-away key
	// pair is used and only EC2 can read the bundle.
	X509CertPath string `mapstructure:"x509_cert_path" required:"false"`
	// Local path to the PEM RSA private key of `x509_cert_path`. It signs the manifest
	// on the machine running Packer and never goes to the instance.
	X509KeyPath string `mapstructure:"x509_key_path" required:"false"`
	// Local path to a PEM certificate replacing the EC2 certificate of `region`'s
	// partition that the bundle's key is wrapped with (new partitions, test clouds).
	EC2CertPath string `mapstructure:"ec2_cert_path" required:"false"`

	// Bundle this image file on the instance (like `ec2-bundle-image`) instead of
	// imaging a mounted volume.
	BundleImage string `mapstructure:"bundle_image" required:"false"`
	// The mount point on the instance whose filesystem is imaged (like
	// `ec2-bundle-vol --volume`). Defaults to `/`.
	BundleVolume string `mapstructure:"bundle_volume" required:"false"`
	// Scratch directory on the instance for the sparse image of the volume. Only the
	// image's data needs room there: parts stream straight to S3. Defaults to an
	// instance-store mount with room, else `/tmp`.
	BundleDestination string `mapstructure:"bundle_destination" required:"false"`
	// Image size in MiB. Defaults to the volume's size. At most 10240.
	BundleSize int `mapstructure:"bundle_size" required:"false"`
	// Absolute paths on the instance left out of the image (the bundler's own files
	// and the scratch directory always are).
	BundleExclude []string `mapstructure:"bundle_exclude" required:"false"`
	// Absolute paths put back into the image although excluded or filtered.
	BundleInclude []string `mapstructure:"bundle_include" required:"false"`
	// Image layout: `auto` (keep the source disk's partition table when the volume is
	// a partition), `mbr`, `gpt` or `none` (a bare filesystem). Defaults to `auto`.
	BundlePartition string `mapstructure:"bundle_partition" required:"false"`

	// The image's architecture, `x86_64` or `i386`; it also picks the agent binary.
	// Defaults to `x86_64`.
	AMIArchitecture string `mapstructure:"ami_architecture" required:"false"`
	// Kernel (AKI) written into the manifest, for paravirtual images.
	AMIKernelId string `mapstructure:"ami_kernel_id" required:"false"`
	// RAM disk (ARI) written into the manifest, for paravirtual images.
	AMIRamdiskId string `mapstructure:"ami_ramdisk_id" required:"false"`

	// Register the bundle as an AMI of this name. When unset, the bundle is only
	// uploaded (register it later with the manifest location the provisioner prints).
	AMIName string `mapstructure:"ami_name" required:"false"`
	// Description of the registered AMI.
	AMIDescription string `mapstructure:"ami_description" required:"false"`
	// `hvm` or `paravirtual`. Defaults to `hvm`.
	AMIVirtType string `mapstructure:"ami_virtualization_type" required:"false"`
	// Root device name of the registered AMI. Defaults to `/dev/sda1`.
	AMIRootDeviceName string `mapstructure:"ami_root_device_name" required:"false"`

	// Parts uploaded at once by the instance. Each holds up to 10 MiB of memory.
	// Defaults to 4.
	UploadConcurrency int `mapstructure:"upload_concurrency" required:"false"`
	// The command that runs the agent (and the final cleanup) as root on the
	// instance, a template with `{{.Path}}`, `{{.Args}}` and `{{.Sudo}}` (true when the
	// SSH user is not root). Defaults to `{{if .Sudo}}sudo -n {{end}}{{.Path}} {{.Args}}`.
	ExecuteCommand string `mapstructure:"execute_command" required:"false"`
	// Directory on the instance in which the agent's private directory is made.
	// Defaults to `/tmp`.
	RemoteFolder string `mapstructure:"remote_folder" required:"false"`
	// Local path of a linux `instancestore-bundler` binary to run as the agent instead
	// of the one built into the plugin.
	AgentBinary string `mapstructure:"agent_binary" required:"false"`
	// How often bundling progress is shown. Defaults to `10s`.
	ProgressInterval time.Duration `mapstructure:"progress_interval" required:"false"`

	ctx interpolate.Context
}

var (
	reS3Prefix = regexp.MustCompile(`^[A-Za-z0-9!_.*'()/-]+$`)
)

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

	if c.S3Bucket == "" {
		add("s3_bucket is required: the S3 bucket that receives the bundle")
	} else if len(c.S3Bucket) < 3 || len(c.S3Bucket) > 63 || strings.Trim(c.S3Bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
		add("s3_bucket %q is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens", c.S3Bucket)
	}
	if c.S3Prefix == "" {
		c.S3Prefix = fmt.Sprintf("instancestore/%s-%s", time.Now().UTC().Format("20060102T150405Z"), randomSuffix())
	} else {
		c.S3Prefix = strings.Trim(c.S3Prefix, "/")
		if c.S3Prefix == "" || !reS3Prefix.MatchString(c.S3Prefix) || path.Clean(c.S3Prefix) != c.S3Prefix || strings.HasPrefix(c.S3Prefix, "..") {
			add("s3_prefix %q is not a clean S3 key prefix: letters, digits and !_.*'()- separated by single slashes", c.S3Prefix)
		}
	}
	// account_id, bundle_prefix, bundle_filter
	errs = packersdk.MultiErrorAppend(errs, c.Options.Prepare(&c.ctx)...)
	if (c.X509CertPath == "") != (c.X509KeyPath == "") {
		add("x509_cert_path and x509_key_path go together: set both (to be able to unbundle later) or neither")
	} else if c.X509CertPath != "" {
		cert, err := format.LoadCertificate(c.X509CertPath)
		if err != nil {
			add("x509_cert_path: %s", err)
		}
		key, err := format.LoadPrivateKey(c.X509KeyPath)
		if err != nil {
			add("x509_key_path: %s", err)
		}
		if cert != nil && key != nil {
			if err := format.MatchKey(cert, key); err != nil {
				add("x509_key_path does not belong to x509_cert_path: %s", err)
			}
		}
	}
	if c.EC2CertPath != "" {
		if _, err := format.LoadCertificate(c.EC2CertPath); err != nil {
			add("ec2_cert_path: %s", err)
		}
	}

	if c.BundleImage != "" {
		if !path.IsAbs(c.BundleImage) {
			add("bundle_image %q must be an absolute path on the instance", c.BundleImage)
		}
		if c.BundleVolume != "" || c.BundleSize != 0 || len(c.BundleExclude) > 0 || len(c.BundleInclude) > 0 || c.BundlePartition != "" || c.BundleDestination != "" {
			add("bundle_image bundles an existing image file: bundle_volume, bundle_destination, bundle_size, bundle_exclude, bundle_include and bundle_partition apply to imaging a volume only; remove them")
		}
	}
	for what, p := range map[string]string{"bundle_volume": c.BundleVolume, "bundle_destination": c.BundleDestination, "remote_folder": c.RemoteFolder} {
		if p != "" && !path.IsAbs(p) {
			add("%s %q must be an absolute path on the instance", what, p)
		}
	}
	if c.BundleDestination == "/" {
		add("bundle_destination must not be /: use a scratch directory such as /mnt or /tmp")
	}
	if c.BundleSize < 0 || c.BundleSize > format.MaxImageSize>>20 {
		add("bundle_size %d is out of range: the image size in MiB, 1 to %d (EC2's limit)", c.BundleSize, format.MaxImageSize>>20)
	}
	for _, p := range append(append([]string{}, c.BundleExclude...), c.BundleInclude...) {
		if !path.IsAbs(p) {
			add("bundle_exclude and bundle_include take absolute paths on the instance, got %q", p)
		}
	}
	switch c.BundlePartition {
	case "", "auto", "none", "mbr", "gpt":
	default:
		add("bundle_partition must be auto, mbr, gpt or none, got %q", c.BundlePartition)
	}
	if c.AMIArchitecture == "" {
		c.AMIArchitecture = "x86_64"
	}
	if _, err := driver.GoArch(c.AMIArchitecture); err != nil || (c.AMIArchitecture != "x86_64" && c.AMIArchitecture != "i386") {
		add("ami_architecture must be x86_64 or i386, got %q", c.AMIArchitecture)
	}
	if c.AMIVirtType == "" {
		c.AMIVirtType = "hvm"
	}
	if c.AMIVirtType != "hvm" && c.AMIVirtType != "paravirtual" {
		add("ami_virtualization_type must be hvm or paravirtual, got %q", c.AMIVirtType)
	}
	if c.AMIRootDeviceName == "" {
		c.AMIRootDeviceName = "/dev/sda1"
	}
	if c.AMIName == "" && (c.AMIDescription != "") {
		add("ami_description needs ami_name: the AMI is registered only when ami_name is set")
	}
	if c.UploadConcurrency < 0 || c.UploadConcurrency > 64 {
		add("upload_concurrency must be 1 to 64, got %d", c.UploadConcurrency)
	}
	if c.UploadConcurrency == 0 {
		c.UploadConcurrency = 4
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 10 * time.Second
	}
	if c.AgentBinary != "" {
		if _, err := driver.GoArch(c.AMIArchitecture); err == nil {
			// read at run time; only existence here
			if _, err := statFile(c.AgentBinary); err != nil {
				add("agent_binary: %s", err)
			}
		}
	}

	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	packersdk.LogSecretFilter.Set(c.AccessKey, c.SecretKey, c.Token)
	return nil
}
