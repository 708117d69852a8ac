//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Options,VolumeOptions,MappingOptions

package driver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// Options are the bundle options of every Packer component that makes a bundle (the
// `instancestore` builder, the `instancestore-bundle` provisioner, the
// `instancestore-import` post-processor): where the bundle goes, who owns it, the keys
// it is wrapped with and how it is compressed and uploaded. Components embed it with
// `mapstructure:",squash"`, so the options keep their top-level names, one
// definition, one set of checks and one set of messages.
type Options struct {
	// The S3 bucket that receives the bundle. It must be in the region where the AMI is
	// registered and allow ACLs: every object is uploaded with the `aws-exec-read` canned
	// ACL, which lets EC2 read it. This is checked before anything is bundled.
	S3Bucket string `mapstructure:"s3_bucket" required:"true"`
	// The key prefix of the bundle's objects in `s3_bucket`. Defaults to
	// `instancestore/<timestamp>-<random>`, unique per build, so parallel builds never
	// overwrite each other's parts.
	S3Prefix string `mapstructure:"s3_prefix" required:"false"`
	// Create `s3_bucket` in the region, with ACLs enabled (Object Ownership "Object
	// writer"), when it does not exist. The bucket is kept after the build.
	S3CreateBucket bool `mapstructure:"s3_create_bucket" required:"false"`
	// Address the bucket in the URL path instead of the host name, for S3-compatible
	// endpoints reached by IP address or a plain host name (`AWS_ENDPOINT_URL_S3`).
	S3ForcePathStyle bool `mapstructure:"s3_force_path_style" required:"false"`
	// Your 12-digit AWS account ID (hyphens are removed), written into the bundle
	// manifest as its owner. This is not the access key. Defaults to the account of the
	// credentials in use, as STS GetCallerIdentity reports it; when both are known they
	// must agree, because EC2 registers a bundle only for the account it names.
	AccountId string `mapstructure:"account_id" required:"false"`
	// The bundle's name: the manifest is `<bundle_prefix>.manifest.xml` and the parts
	// `<bundle_prefix>.part.NN`. Defaults to `image-{{timestamp}}`.
	BundlePrefix string `mapstructure:"bundle_prefix" required:"false"`
	// Local path to a PEM X.509 certificate of yours. The bundle's key is also wrapped
	// with it, so you can unbundle the image later with the matching private key. When
	// unset, a throw-away key pair is used and the bundle can be unbundled by EC2 only.
	// Set together with `x509_key_path`.
	X509CertPath string `mapstructure:"x509_cert_path" required:"false"`
	// Local path to the PEM RSA private key (PKCS#1 or PKCS#8, without passphrase) of
	// `x509_cert_path`. It signs the manifest on the machine running Packer and is never
	// copied anywhere. Set together with `x509_cert_path`.
	X509KeyPath string `mapstructure:"x509_key_path" required:"false"`
	// Local path to a PEM certificate that replaces the EC2 certificate the bundle's key
	// is wrapped with. By default the certificate embedded for the region's partition is
	// used (AWS, AWS GovCloud or AWS China); set this for new partitions or for a test
	// environment.
	EC2CertPath string `mapstructure:"ec2_cert_path" required:"false"`
	// The AMI's architecture, `x86_64` or `i386` (the instance types that boot instance
	// store-backed AMIs are all x86). The builder defaults it to the source AMI's, the
	// other components to `x86_64`.
	AMIArchitecture string `mapstructure:"ami_architecture" required:"false"`
	// The kernel (AKI) registered with a paravirtual AMI and written into its manifest.
	// The builder defaults it to the source AMI's.
	AMIKernelId string `mapstructure:"ami_kernel_id" required:"false"`
	// The RAM disk (ARI) registered with a paravirtual AMI and written into its
	// manifest. The builder defaults it to the source AMI's.
	AMIRamdiskId string `mapstructure:"ami_ramdisk_id" required:"false"`
	// The gzip level of the bundle, 1 (fastest) to 9 (smallest). 0, the default, picks
	// the bundler's default level, which keeps bundles within 5% of `gzip -9` at many
	// times its speed.
	CompressionLevel int `mapstructure:"bundle_compression_level" required:"false"`
	// How many parts are uploaded at once. Each holds up to 10 MiB of memory. 1 to 64;
	// defaults to 4.
	UploadConcurrency int `mapstructure:"upload_concurrency" required:"false"`
}

// MappingOptions is the new AMI's block device mapping option, shared by every
// component (embedded with `mapstructure:",squash"`); see mappings.go for what the
// AMI inherits before it applies.
type MappingOptions struct {
	// Block device mappings of the new AMI besides its root device: instance store
	// volumes (`device_name = "/dev/sdc"`, `virtual_name = "ephemeral1"`) that EC2
	// attaches to the instances launched from it. They apply entry by entry, by device
	// name, over the mapping the AMI inherits (see "Block device mappings" on this
	// page): an entry with `virtual_name` replaces the inherited one on its device, and
	// `no_device = true` drops it. EBS volumes cannot be mapped: an instance store-backed
	// AMI's manifest maps only instance store volumes.
	AMIMappings awscommon.BlockDevices `mapstructure:"ami_block_device_mappings" required:"false"`
}

// Prepare checks ami_block_device_mappings, returning every problem.
func (o *MappingOptions) Prepare(ctx *interpolate.Context) []error {
	errs := o.AMIMappings.Prepare(ctx)
	for _, bd := range o.AMIMappings {
		if bd.SnapshotId != "" || bd.VolumeSize != 0 || bd.VolumeType != "" || bd.KmsKeyId != "" || bd.Encrypted.True() {
			errs = append(errs, fmt.Errorf("ami_block_device_mappings %s: EBS volumes cannot be mapped in an instance store-backed AMI (its manifest maps only instance store volumes, and RegisterImage of a bundle takes no EBS snapshot or size); map instance store volumes with virtual_name (ephemeral0, ...), or add EBS volumes at launch time", bd.DeviceName))
		}
	}
	return errs
}

// VolumeOptions are the options of imaging a live volume on an instance with the agent,
// shared by the builder and the provisioner (embedded with `mapstructure:",squash"`).
type VolumeOptions struct {
	// Scratch directory on the instance that holds the sparse image of the volume while
	// it is bundled. It needs free space for the volume's data only (not for the
	// encrypted bundle: parts stream straight to S3) and is left out of the image.
	// Defaults to a mounted instance store volume with enough room, else an unused
	// blank NVMe instance store disk (m5d, c5d, ...) that the agent formats, mounts and
	// unmounts again, else `/tmp`. Too little room fails the build before imaging.
	BundleDestination string `mapstructure:"bundle_destination" required:"false"`
	// Size of the image in MiB, 1 to 10240 (10 GiB, the limit EC2 sets for instance
	// store-backed AMIs). Defaults to the size of the volume when that fits, else to
	// what its files need plus a quarter (at least 512 MiB) of headroom.
	BundleSize int `mapstructure:"bundle_size" required:"false"`
	// Absolute paths on the instance left out of the image, in addition to the agent's
	// own files, `bundle_destination` and the contents of virtual filesystems (/proc,
	// /sys, ...).
	BundleExclude []string `mapstructure:"bundle_exclude" required:"false"`
	// Absolute paths on the instance put back into the image although an exclude or the
	// filter would leave them out.
	BundleInclude []string `mapstructure:"bundle_include" required:"false"`
	// Leave out files that usually hold secrets (`*.pem`, `*.gpg`, `*id_rsa*`,
	// `.ssh/authorized_keys`, shell history, ...). Defaults to `false`, like the
	// `ec2-bundle-vol --no-filter` that the `amazon-instance` builder ran, because the
	// filter also removes TLS certificates and apt keys the image needs; set `true` for
	// ec2-bundle-vol's default filter.
	BundleFilter config.Trilean `mapstructure:"bundle_filter" required:"false"`
	// How the image is laid out:
	//
	// - `auto` (the default): as the volume is. A volume on a partition of a disk with
	//   an MBR or GPT table gets that table, the boot code and the partition's place in
	//   it; a volume that is a whole device becomes a bare filesystem.
	// - `mbr` or `gpt`: that table. The source disk's table and boot code are kept when
	//   it is of that type; otherwise a new table holds the filesystem as its only
	//   partition, with no boot loader.
	// - `none`: a bare filesystem, as paravirtual AMIs use.
	//
	// `mbr` and `gpt` do not work with `ami_virtualization_type = "paravirtual"`, and
	// `none` does not boot as `hvm`.
	BundlePartition string `mapstructure:"bundle_partition" required:"false"`
	// Local path to a Linux `instancestore-bundler` executable to run on the instance as
	// the agent instead of the one built into the plugin.
	AgentBinary string `mapstructure:"agent_binary" required:"false"`
}

// Values of bundle_partition (those of bundle/volume).
const (
	PartitionAuto = "auto"
	PartitionNone = "none"
	PartitionMBR  = "mbr"
	PartitionGPT  = "gpt"
)

// DefaultBundlePrefix is bundle_prefix's default, rendered when Prepare runs.
const DefaultBundlePrefix = "image-{{timestamp}}"

// DefaultUploadConcurrency is upload_concurrency's default.
const DefaultUploadConcurrency = 4

// maxImageMiB is bundle.MaxImageSize in MiB: EC2 refuses larger images.
const maxImageMiB = bundle.MaxImageSize >> 20

var (
	reAccountID = regexp.MustCompile(`^[0-9]{12}$`)
	// Characters EC2's manifest and S3 keys take without escaping.
	reBundlePrefix = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	reS3Prefix     = regexp.MustCompile(`^[A-Za-z0-9!_.*'()/-]+$`)
	reBucket       = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// Prepare applies the defaults and checks every option, returning all problems at
// once. ctx renders the default bundle_prefix and s3_prefix. It reads the X.509 files
// to check them; Keys loads them again when the bundle is made.
func (o *Options) Prepare(ctx *interpolate.Context) []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch {
	case o.S3Bucket == "":
		add("s3_bucket is required: the S3 bucket that receives the bundle")
	case !reBucket.MatchString(o.S3Bucket) || strings.Contains(o.S3Bucket, ".."):
		add("s3_bucket %q is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens", o.S3Bucket)
	}
	if o.S3Prefix == "" {
		o.S3Prefix = "instancestore/" + render("{{timestamp}}", ctx) + "-" + randomSuffix()
	} else {
		o.S3Prefix = strings.Trim(o.S3Prefix, "/")
		if o.S3Prefix == "" || !reS3Prefix.MatchString(o.S3Prefix) || path.Clean(o.S3Prefix) != o.S3Prefix || strings.HasPrefix(o.S3Prefix, "..") {
			add("s3_prefix %q is not a clean S3 key prefix: use letters, digits and !_.*'()- separated by single slashes, without . or .. segments", o.S3Prefix)
		}
	}
	if o.AccountId != "" {
		o.AccountId = strings.ReplaceAll(o.AccountId, "-", "")
		if !reAccountID.MatchString(o.AccountId) {
			add("account_id must be a 12-digit AWS account ID (hyphens allowed), got %q", o.AccountId)
		}
	}
	if o.BundlePrefix == "" {
		o.BundlePrefix = render(DefaultBundlePrefix, ctx)
	}
	if !reBundlePrefix.MatchString(o.BundlePrefix) {
		add("bundle_prefix %q may contain only letters, digits, dots, hyphens and underscores", o.BundlePrefix)
	}
	if _, err := o.Keys(); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	switch o.AMIArchitecture {
	case "", "x86_64", "i386":
	default:
		add("ami_architecture must be x86_64 or i386 (the instance types that boot instance store-backed AMIs are all x86), got %q", o.AMIArchitecture)
	}
	if o.CompressionLevel < 0 || o.CompressionLevel > 9 {
		add("bundle_compression_level %d is out of range: use 1 (fastest) to 9 (smallest), or 0 for the default (%d)", o.CompressionLevel, bundle.DefaultLevel)
	}
	if o.UploadConcurrency < 0 || o.UploadConcurrency > 64 {
		add("upload_concurrency %d is out of range: 1 to 64 parts at once (0 for the default, %d)", o.UploadConcurrency, DefaultUploadConcurrency)
	}
	if o.UploadConcurrency == 0 {
		o.UploadConcurrency = DefaultUploadConcurrency
	}
	return errs
}

// CheckVirtualization checks the options that depend on the AMI's virtualization type
// (hvm or paravirtual), once a component knows it.
func (o *Options) CheckVirtualization(virt string) []error {
	if virt == "hvm" && (o.AMIKernelId != "" || o.AMIRamdiskId != "") {
		return []error{errors.New("ami_kernel_id and ami_ramdisk_id apply to paravirtual AMIs only; remove them or set ami_virtualization_type = \"paravirtual\"")}
	}
	return nil
}

// Keys are the X.509 material the options name, loaded. Nil certificates mean the
// defaults: the region's EC2 certificate, and a throw-away user pair.
type Keys struct {
	EC2Cert  *x509.Certificate
	UserCert *x509.Certificate
	UserKey  *rsa.PrivateKey
}

// Keys loads x509_cert_path, x509_key_path and ec2_cert_path, checking that the first
// two come together and belong together. All problems are joined in the error.
func (o *Options) Keys() (Keys, error) {
	var k Keys
	var errs []error
	if (o.X509CertPath == "") != (o.X509KeyPath == "") {
		errs = append(errs, errors.New("x509_cert_path and x509_key_path go together: set both (to be able to unbundle the image later) or neither (a throw-away key pair)"))
	} else if o.X509CertPath != "" {
		var err error
		if k.UserCert, err = bundle.LoadCertificate(o.X509CertPath); err != nil {
			errs = append(errs, fmt.Errorf("x509_cert_path: %w", err))
		}
		if k.UserKey, err = bundle.LoadPrivateKey(o.X509KeyPath); err != nil {
			errs = append(errs, fmt.Errorf("x509_key_path: %w", err))
		}
		if k.UserCert != nil && k.UserKey != nil {
			if err := bundle.MatchKey(k.UserCert, k.UserKey); err != nil {
				errs = append(errs, fmt.Errorf("x509_key_path %s is not the private key of x509_cert_path %s: %w", o.X509KeyPath, o.X509CertPath, err))
			}
		}
	}
	if o.EC2CertPath != "" {
		var err error
		if k.EC2Cert, err = bundle.LoadCertificate(o.EC2CertPath); err != nil {
			errs = append(errs, fmt.Errorf("ec2_cert_path: %w", err))
		}
	}
	return k, errors.Join(errs...)
}

// Account settles the account that owns the bundle: the account of the credentials
// (STS GetCallerIdentity), which must match account_id when that is set. When STS
// cannot be asked, account_id is used as given.
func (o *Options) Account(ctx context.Context, cfg aws.Config) (string, error) {
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		if o.AccountId != "" {
			return o.AccountId, nil
		}
		return "", fmt.Errorf("finding the AWS account for the bundle manifest with STS GetCallerIdentity: %w; set account_id to your 12-digit account ID", err)
	}
	id := aws.ToString(out.Account)
	if !reAccountID.MatchString(id) {
		if o.AccountId != "" {
			return o.AccountId, nil
		}
		return "", fmt.Errorf("STS GetCallerIdentity returned account %q, not a 12-digit account ID; set account_id", id)
	}
	if o.AccountId != "" && o.AccountId != id {
		return "", fmt.Errorf("account_id %s is not the account of the credentials in use (STS says %s): EC2 registers a bundle only for the account its manifest names; fix account_id or remove it", o.AccountId, id)
	}
	return id, nil
}

// Bucket is the bundle location the options name, with a client for region.
func (o *Options) Bucket(cfg aws.Config, region string) (*s3bundle.Bucket, error) {
	b, err := s3bundle.New(cfg, region, o.S3Bucket, o.S3Prefix, s3bundle.Options{PathStyle: o.S3ForcePathStyle})
	if err != nil {
		return nil, fmt.Errorf("s3_bucket: %w", err)
	}
	return b, nil
}

// PreflightBucket checks, before anything is bundled, that the bundle can be stored
// where EC2 will read it (see s3bundle.Bucket.Preflight), creating the bucket when
// s3_create_bucket is set. say reports what it does.
func (o *Options) PreflightBucket(ctx context.Context, cfg aws.Config, region string, say func(string)) (*s3bundle.Bucket, error) {
	b, err := o.Bucket(cfg, region)
	if err != nil {
		return nil, err
	}
	say(fmt.Sprintf("Checking bundle location %s (region %s, ACLs, encryption, upload with aws-exec-read)...", b, region))
	created, err := b.Preflight(ctx, s3bundle.PreflightOptions{Create: o.S3CreateBucket})
	if err != nil {
		return nil, o.explainPreflight(err)
	}
	if created {
		say(fmt.Sprintf("Created bucket %s in %s (it is kept after the build)", o.S3Bucket, region))
	}
	return b, nil
}

// explainPreflight names the options that fix a preflight failure.
func (o *Options) explainPreflight(err error) error {
	if errors.Is(err, s3bundle.ErrNoBucket) {
		return fmt.Errorf("s3_bucket: %w; create it with ACLs enabled, or set s3_create_bucket = true to let the plugin create it", err)
	}
	return fmt.Errorf("s3_bucket: %w", err)
}

// Request is the agent job these options describe, for mode and bundle_prefix.
func (o *Options) Request(mode string) agent.Request {
	return agent.Request{
		Mode:             mode,
		Name:             o.BundlePrefix,
		Concurrency:      o.UploadConcurrency,
		CompressionLevel: o.CompressionLevel,
	}
}

// Prepare applies the defaults and checks every option, returning all problems.
func (v *VolumeOptions) Prepare() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch {
	case v.BundleDestination == "":
		// The agent picks an instance store volume with room, else /tmp.
	case !path.IsAbs(v.BundleDestination):
		add("bundle_destination %q must be an absolute path on the instance", v.BundleDestination)
	default:
		v.BundleDestination = path.Clean(v.BundleDestination)
		if v.BundleDestination == "/" {
			add("bundle_destination must not be /: it is left out of the image, so use a scratch directory such as /mnt or /tmp")
		}
	}
	if v.BundleSize < 0 || v.BundleSize > maxImageMiB {
		add("bundle_size %d is out of range: give the image size in MiB, 1 to %d (EC2's 10 GiB limit for instance store-backed AMIs)", v.BundleSize, maxImageMiB)
	}
	for _, p := range v.BundleExclude {
		if !path.IsAbs(p) {
			add("bundle_exclude %q must be an absolute path on the instance", p)
		}
	}
	for _, p := range v.BundleInclude {
		if !path.IsAbs(p) {
			add("bundle_include %q must be an absolute path on the instance", p)
		}
	}
	// Off by default: the filter drops TLS certificates and apt keys images need.
	if v.BundleFilter == config.TriUnset {
		v.BundleFilter = config.TriFalse
	}
	switch v.BundlePartition {
	case "":
		v.BundlePartition = PartitionAuto
	case PartitionAuto, PartitionMBR, PartitionGPT, PartitionNone:
	default:
		add("bundle_partition must be auto, mbr, gpt or none, got %q", v.BundlePartition)
	}
	if v.AgentBinary != "" {
		if _, err := os.Stat(v.AgentBinary); err != nil {
			add("agent_binary: %s", err)
		}
	}
	return errs
}

// CheckVirtualization checks bundle_partition against the AMI's virtualization type.
func (v *VolumeOptions) CheckVirtualization(virt string) []error {
	switch {
	case virt == "paravirtual" && (v.BundlePartition == PartitionMBR || v.BundlePartition == PartitionGPT):
		return []error{fmt.Errorf("bundle_partition %q does not work with ami_virtualization_type paravirtual: a paravirtual AMI's image is a bare filesystem, use none or auto", v.BundlePartition)}
	case virt == "hvm" && v.BundlePartition == PartitionNone:
		return []error{errors.New("bundle_partition none does not boot as ami_virtualization_type hvm: an hvm image needs a partition table and boot code, use auto, mbr or gpt")}
	}
	return nil
}

// VolumeRequest is the agent's imaging job for the volume mounted at volume.
func (v *VolumeOptions) VolumeRequest(volume string) *agent.VolumeRequest {
	return &agent.VolumeRequest{
		Volume:    volume,
		Scratch:   v.BundleDestination,
		SizeMB:    int64(v.BundleSize),
		Excludes:  v.BundleExclude,
		Includes:  v.BundleInclude,
		Filter:    v.BundleFilter.True(),
		Partition: v.BundlePartition,
	}
}

func render(s string, ctx *interpolate.Context) string {
	if ctx != nil {
		if out, err := interpolate.Render(s, ctx); err == nil {
			return out
		}
	}
	return strings.NewReplacer("{{timestamp}}", time.Now().UTC().Format("20060102150405")).Replace(s)
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// unjoin splits an errors.Join result so that each problem is listed on its own.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
