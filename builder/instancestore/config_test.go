package instancestore

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
)

// baseConfig is the smallest valid configuration.
func baseConfig() map[string]interface{} {
	return map[string]interface{}{
		"region":        "us-east-1",
		"source_ami":    "ami-12345678",
		"instance_type": "m3.medium",
		"ami_name":      "instancestore-test",
		"s3_bucket":     "my-bundles",
		"ssh_username":  "root",
	}
}

func with(kv ...interface{}) map[string]interface{} {
	m := baseConfig()
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(m, kv[i].(string))
			continue
		}
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func prepare(t *testing.T, raw map[string]interface{}) (*Config, []string, []string) {
	t.Helper()
	var c Config
	warns, err := c.Prepare(raw)
	var msgs []string
	if err != nil {
		merr, ok := err.(*packersdk.MultiError)
		if !ok {
			return &c, warns, []string{err.Error()}
		}
		for _, e := range merr.Errors {
			msgs = append(msgs, e.Error())
		}
	}
	return &c, warns, msgs
}

func TestPrepareErrors(t *testing.T) {
	cases := []struct {
		name string
		raw  map[string]interface{}
		want []string
	}{
		{"valid", baseConfig(), nil},
		{"missing bucket", with("s3_bucket", nil),
			[]string{"s3_bucket is required: the S3 bucket that receives the bundle"}},
		{"bad bucket", with("s3_bucket", "My_Bucket"),
			[]string{`s3_bucket "My_Bucket" is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens`}},
		{"short bucket", with("s3_bucket", "ab"),
			[]string{`s3_bucket "ab" is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens`}},
		{"account id letters", with("account_id", "1234-5678-901x"),
			[]string{`account_id must be a 12-digit AWS account ID (hyphens allowed), got "12345678901x"`}},
		{"account id short", with("account_id", "1234"),
			[]string{`account_id must be a 12-digit AWS account ID (hyphens allowed), got "1234"`}},
		{"s3 prefix with dot segment", with("s3_prefix", "a/../b"),
			[]string{`s3_prefix "a/../b" is not a clean S3 key prefix: use letters, digits and !_.*'()- separated by single slashes, without . or .. segments`}},
		{"s3 prefix with double slash", with("s3_prefix", "a//b"),
			[]string{`s3_prefix "a//b" is not a clean S3 key prefix: use letters, digits and !_.*'()- separated by single slashes, without . or .. segments`}},
		{"s3 prefix with space", with("s3_prefix", "a b"),
			[]string{`s3_prefix "a b" is not a clean S3 key prefix: use letters, digits and !_.*'()- separated by single slashes, without . or .. segments`}},
		{"bundle prefix with slash", with("bundle_prefix", "a/b"),
			[]string{`bundle_prefix "a/b" may contain only letters, digits, dots, hyphens and underscores`}},
		{"bundle_vol_command", with("bundle_vol_command", "sudo ec2-bundle-vol"),
			[]string{"bundle_vol_command is not supported: this builder bundles the root volume with its own agent instead of Ruby ec2-bundle-vol; remove it and use bundle_destination, bundle_size, bundle_exclude, bundle_include, bundle_filter and bundle_partition"}},
		{"bundle_upload_command", with("bundle_upload_command", "sudo ec2-upload-bundle"),
			[]string{"bundle_upload_command is not supported: the instance uploads each part to a presigned URL issued by Packer, so no ec2-upload-bundle and no AWS keys on the instance; remove it (s3_bucket and s3_prefix choose where the bundle goes)"}},
		// The amazon plugin's default: copied templates carry it, so it only warns.
		{"x509_upload_path", with("x509_upload_path", "/tmp"), nil},
		{"tpm_support", with("tpm_support", "v2.0"),
			[]string{"tpm_support cannot be used: NitroTPM needs a Nitro instance type, and none of the instance types that boot instance store-backed AMIs (c1, c3, d2, i2, m1-m3, r3, x1, ...) is Nitro-based; remove it"}},
		{"winrm", with("communicator", "winrm", "winrm_username", "Administrator"),
			[]string{`communicator winrm cannot be used: the bundling agent runs on Linux only, and instance store-backed Windows AMIs cannot be made this way; use communicator = "ssh" with a Linux source AMI`}},
		{"encrypt_boot", with("encrypt_boot", true),
			[]string{"encrypt_boot cannot be used: an instance store-backed AMI has no EBS volume to encrypt (its bundle is always encrypted); remove it or use amazon-ebs"}},
		{"kms_key_id", with("kms_key_id", "1234abcd-12ab-34cd-56ef-1234567890ab"),
			[]string{"kms_key_id and region_kms_key_ids cannot be used: an instance store-backed AMI has no EBS snapshots to encrypt; remove them"}},
		{"snapshot_users", with("snapshot_users", []string{"123456789012"}),
			[]string{"snapshot_users, snapshot_groups, snapshot_tags, snapshot_tag and snapshot_copy_duration_minutes cannot be used: an instance store-backed AMI has no EBS snapshots; use ami_users/ami_groups and tags for the AMI"}},
		{"snapshot_tags", with("snapshot_tags", map[string]string{"a": "b"}),
			[]string{"snapshot_users, snapshot_groups, snapshot_tags, snapshot_tag and snapshot_copy_duration_minutes cannot be used: an instance store-backed AMI has no EBS snapshots; use ami_users/ami_groups and tags for the AMI"}},
		{"skip_save_build_region", with("skip_save_build_region", true),
			[]string{"skip_save_build_region cannot be used: an instance store-backed AMI is registered from its bundle in the build region; remove it"}},
		{"x509 cert without key", with("x509_cert_path", "testdata/user-cert.pem"),
			[]string{"x509_cert_path and x509_key_path go together: set both (to be able to unbundle the image later) or neither (a throw-away key pair)"}},
		{"x509 key without cert", with("x509_key_path", "testdata/user-key.pem"),
			[]string{"x509_cert_path and x509_key_path go together: set both (to be able to unbundle the image later) or neither (a throw-away key pair)"}},
		{"x509 missing files", with("x509_cert_path", "testdata/nope.pem", "x509_key_path", "testdata/nope-key.pem"),
			[]string{
				"x509_cert_path: reading certificate: open testdata/nope.pem: no such file or directory",
				"x509_key_path: reading private key: open testdata/nope-key.pem: no such file or directory",
			}},
		{"x509 swapped", with("x509_cert_path", "testdata/user-key.pem", "x509_key_path", "testdata/user-cert.pem"),
			[]string{
				"x509_cert_path: certificate testdata/user-key.pem: no PEM CERTIFICATE block found",
				"x509_key_path: private key testdata/user-cert.pem: no PEM private key block found (want RSA PRIVATE KEY or PRIVATE KEY)",
			}},
		{"x509 key of another cert", with("x509_cert_path", "testdata/user-cert.pem", "x509_key_path", "testdata/other-key.pem"),
			[]string{"x509_key_path testdata/other-key.pem is not the private key of x509_cert_path testdata/user-cert.pem: the private key does not belong to the certificate"}},
		{"x509 pair pkcs8", with("x509_cert_path", "testdata/user-cert.pem", "x509_key_path", "testdata/user-key.pem"), nil},
		{"x509 pair pkcs1", with("x509_cert_path", "testdata/user-cert.pem", "x509_key_path", "testdata/user-key-pkcs1.pem"), nil},
		{"ec2 cert", with("ec2_cert_path", "testdata/user-cert.pem"), nil},
		{"ec2 cert not a cert", with("ec2_cert_path", "testdata/user-key.pem"),
			[]string{"ec2_cert_path: certificate testdata/user-key.pem: no PEM CERTIFICATE block found"}},
		{"relative destination", with("bundle_destination", "tmp"),
			[]string{`bundle_destination "tmp" must be an absolute path on the instance`}},
		{"root destination", with("bundle_destination", "/"),
			[]string{"bundle_destination must not be /: it is left out of the image, so use a scratch directory such as /mnt or /tmp"}},
		{"bundle size too big", with("bundle_size", 10241),
			[]string{"bundle_size 10241 is out of range: give the image size in MiB, 1 to 10240 (EC2's 10 GiB limit for instance store-backed AMIs)"}},
		{"bundle size negative", with("bundle_size", -1),
			[]string{"bundle_size -1 is out of range: give the image size in MiB, 1 to 10240 (EC2's 10 GiB limit for instance store-backed AMIs)"}},
		{"relative exclude and include", with("bundle_exclude", []string{"var/cache"}, "bundle_include", []string{"etc/x.pem"}),
			[]string{
				`bundle_exclude "var/cache" must be an absolute path on the instance`,
				`bundle_include "etc/x.pem" must be an absolute path on the instance`,
			}},
		{"bad virtualization", with("ami_virtualization_type", "pv"),
			[]string{`ami_virtualization_type must be hvm or paravirtual, got "pv"`}},
		{"bad partition", with("bundle_partition", "dos"),
			[]string{`bundle_partition must be auto, mbr, gpt or none, got "dos"`}},
		{"hvm without partition", with("bundle_partition", "none"),
			[]string{"bundle_partition none does not boot as ami_virtualization_type hvm: an hvm image needs a partition table and boot code, use auto, mbr or gpt"}},
		{"paravirtual with partition", with("ami_virtualization_type", "paravirtual", "bundle_partition", "gpt"),
			[]string{`bundle_partition "gpt" does not work with ami_virtualization_type paravirtual: a paravirtual AMI's image is a bare filesystem, use none or auto`}},
		{"arm64", with("ami_architecture", "arm64"),
			[]string{`ami_architecture must be x86_64 or i386 (the instance types that boot instance store-backed AMIs are all x86), got "arm64"`}},
		{"kernel on hvm", with("ami_kernel_id", "aki-12345678"),
			[]string{`ami_kernel_id and ami_ramdisk_id apply to paravirtual AMIs only; remove them or set ami_virtualization_type = "paravirtual"`}},
		{"kernel on paravirtual", with("ami_virtualization_type", "paravirtual", "ami_kernel_id", "aki-12345678", "instance_type", "m1.small"), nil},
		{"ebs in ami mappings", with("ami_block_device_mappings", []map[string]interface{}{{"device_name": "/dev/sdf", "volume_size": 10}}),
			[]string{"ami_block_device_mappings /dev/sdf: EBS volumes cannot be mapped in an instance store-backed AMI (its manifest maps only instance store volumes, and RegisterImage of a bundle takes no EBS snapshot or size); map instance store volumes with virtual_name (ephemeral0, ...), or add EBS volumes at launch time"}},
		{"ephemeral in ami mappings", with("ami_block_device_mappings", []map[string]interface{}{{"device_name": "/dev/sdb", "virtual_name": "ephemeral0"}}), nil},
		// EBS-backed sources run on any type and give hvm AMIs.
		{"current-generation instance type", with("instance_type", "m5d.large"), nil},
		{"spot instance types", with("instance_type", nil, "spot_instance_types", []string{"c3.large", "m5.large"}, "spot_price", "auto"), nil},
		{"current-generation type, paravirtual", with("instance_type", "t3.micro", "ami_virtualization_type", "paravirtual"),
			[]string{`instance_type "t3.micro" runs EBS-backed source AMIs only, and this builder makes hvm AMIs from them: set ami_virtualization_type = "hvm", or build on one of the families c1 c3 d2 i2 m1 m2 m3 r3 x1 from a paravirtual instance store-backed source`}},
		{"current-generation type, instance store filter", with("instance_type", "m5d.large", "source_ami", nil,
			"source_ami_filter", map[string]interface{}{"owners": []string{"self"}, "filters": map[string]string{"root-device-type": "instance-store"}}),
			[]string{`instance_type "m5d.large" cannot run the instance store-backed source that source_ami_filter selects (root-device-type = "instance-store"): only the families c1 c3 d2 i2 m1 m2 m3 r3 x1 boot instance store-backed AMIs; use one of them, or an EBS-backed source (root-device-type = "ebs")`}},
		{"ebs filter, paravirtual", with("instance_type", "m1.small", "ami_virtualization_type", "paravirtual", "source_ami", nil,
			"source_ami_filter", map[string]interface{}{"owners": []string{"self"}, "filters": map[string]string{"root-device-type": "ebs"}}),
			[]string{`source_ami_filter selects an EBS-backed source (root-device-type = "ebs"), and this builder makes hvm AMIs from them: set ami_virtualization_type = "hvm"`}},
		{"ebs filter, m5d", with("instance_type", "m5d.large", "source_ami", nil,
			"source_ami_filter", map[string]interface{}{"owners": []string{"136693071363"}, "most_recent": true, "filters": map[string]string{"root-device-type": "ebs", "name": "debian-12-amd64-*"}}), nil},
		{"bundle_size over EC2's limit", with("bundle_size", 10241),
			[]string{"bundle_size 10241 is out of range: give the image size in MiB, 1 to 10240 (EC2's 10 GiB limit for instance store-backed AMIs)"}},
		{"shutdown stop", with("shutdown_behavior", "stop"),
			[]string{"shutdown_behavior stop is not possible: an instance store-backed instance cannot be stopped, use terminate"}},
		// Errors of the shared amazon configuration come through with their own words.
		{"missing ami_name", with("ami_name", nil),
			[]string{"ami_name must be specified", "ami_name must be between 3 and 128 characters long"}},
		{"missing source", with("source_ami", nil),
			[]string{"A source_ami or source_ami_filter must be specified", "For security reasons, your source AMI filter must declare an owner."}},
		// Every problem is reported at once.
		{"many at once", with("s3_bucket", nil, "bundle_vol_command", "x", "account_id", "12", "bundle_partition", "dos"),
			[]string{
				"bundle_vol_command is not supported: this builder bundles the root volume with its own agent instead of Ruby ec2-bundle-vol; remove it and use bundle_destination, bundle_size, bundle_exclude, bundle_include, bundle_filter and bundle_partition",
				"s3_bucket is required: the S3 bucket that receives the bundle",
				`account_id must be a 12-digit AWS account ID (hyphens allowed), got "12"`,
				`bundle_partition must be auto, mbr, gpt or none, got "dos"`,
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, got := prepare(t, tc.raw)
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n got: %q\nwant: %q", got, tc.want)
			}
		})
	}
}

func TestPrepareWarnings(t *testing.T) {
	cases := []struct {
		name string
		raw  map[string]interface{}
		want []string
	}{
		{"none", baseConfig(), nil},
		{"force_delete_snapshot", with("force_delete_snapshot", true),
			[]string{"force_delete_snapshot has no effect: instance store-backed AMIs have no snapshots (force_deregister deletes the old bundle's S3 objects unless keep_bundle_on_deregister is set)"}},
		{"disable_stop_instance", with("disable_stop_instance", true),
			[]string{"disable_stop_instance has no effect: an instance store-backed instance is never stopped, it is bundled while running and then terminated"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, warns, errs := prepare(t, tc.raw)
			if errs != nil {
				t.Fatalf("unexpected errors: %q", errs)
			}
			if !slices.Equal(warns, tc.want) {
				t.Errorf("warnings:\n got: %q\nwant: %q", warns, tc.want)
			}
		})
	}
}

func TestPrepareDefaults(t *testing.T) {
	c, _, errs := prepare(t, baseConfig())
	if errs != nil {
		t.Fatal(errs)
	}
	if c.AMIVirtType != "hvm" {
		t.Errorf("ami_virtualization_type = %q, want hvm", c.AMIVirtType)
	}
	if c.BundlePartition != "auto" {
		t.Errorf("bundle_partition = %q, want auto", c.BundlePartition)
	}
	if c.BundleDestination != "" {
		t.Errorf("bundle_destination = %q, want empty (the agent picks an instance store volume)", c.BundleDestination)
	}
	if c.BundleFilter != config.TriFalse {
		t.Errorf("bundle_filter = %v, want false (ec2-bundle-vol --no-filter)", c.BundleFilter)
	}
	if !regexp.MustCompile(`^image-[0-9]+$`).MatchString(c.BundlePrefix) {
		t.Errorf("bundle_prefix = %q, want image-<timestamp>", c.BundlePrefix)
	}
	if !regexp.MustCompile(`^instancestore/[0-9]+-[0-9a-f]{8}$`).MatchString(c.S3Prefix) {
		t.Errorf("s3_prefix = %q, want instancestore/<timestamp>-<random>", c.S3Prefix)
	}
	if c.AccountId != "" || c.AMIArchitecture != "" {
		t.Errorf("account_id %q and ami_architecture %q must stay empty until the build resolves them", c.AccountId, c.AMIArchitecture)
	}

	// Two builds never share a default prefix.
	c2, _, _ := prepare(t, baseConfig())
	if c2.S3Prefix == c.S3Prefix {
		t.Errorf("two builds got the same default s3_prefix %q", c.S3Prefix)
	}

	// paravirtual defaults to a bare filesystem.
	pv, _, errs := prepare(t, with("ami_virtualization_type", "paravirtual", "instance_type", "m1.small"))
	if errs != nil {
		t.Fatal(errs)
	}
	if pv.BundlePartition != "auto" {
		t.Errorf("paravirtual bundle_partition = %q, want auto (the volume as it is)", pv.BundlePartition)
	}
}

func TestPrepareNormalizes(t *testing.T) {
	c, _, errs := prepare(t, with(
		"account_id", "1234-5678-9012",
		"s3_prefix", "/builds/web/",
		"bundle_destination", "/mnt/scratch/",
		"bundle_filter", true,
		"ami_regions", []string{"us-east-1", "eu-west-1", "eu-west-1"},
	))
	if errs != nil {
		t.Fatal(errs)
	}
	if c.AccountId != "123456789012" {
		t.Errorf("account_id = %q", c.AccountId)
	}
	if c.S3Prefix != "builds/web" {
		t.Errorf("s3_prefix = %q", c.S3Prefix)
	}
	if c.BundleDestination != "/mnt/scratch" {
		t.Errorf("bundle_destination = %q", c.BundleDestination)
	}
	if c.BundleFilter != config.TriTrue {
		t.Errorf("bundle_filter = %v, want true", c.BundleFilter)
	}
	// -force turns on force_deregister.
	c2, _, errs := prepare(t, with("packer_force", true))
	if errs != nil {
		t.Fatal(errs)
	}
	if !c2.AMIForceDeregister {
		t.Error("-force did not set force_deregister")
	}
	// The build region is dropped from ami_regions, duplicates too.
	if strings.Join(c.AMIRegions, ",") != "eu-west-1" {
		t.Errorf("ami_regions = %q", c.AMIRegions)
	}
}

func TestGeneratedDataNames(t *testing.T) {
	var b Builder
	names, _, err := b.Prepare(baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SourceAMI", "SourceAMIName", "BundleManifest", "BuildRegion"} {
		if !slices.Contains(names, want) {
			t.Errorf("generated data %q missing from %q", want, names)
		}
	}
}
