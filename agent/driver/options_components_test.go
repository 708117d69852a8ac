package driver_test

import (
	"slices"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore"
	importpp "github.com/instancestore/packer-plugin-instancestore/post-processor/import"
	provisioner "github.com/instancestore/packer-plugin-instancestore/provisioner/bundle"
)

// component is one Packer component that embeds the shared options: a valid base
// configuration, and its Prepare returning every error message and the options (the
// volume options are nil for a component that images no live volume).
type component struct {
	name    string
	base    map[string]interface{}
	prepare func(raw map[string]interface{}) ([]string, *driver.Options, *driver.VolumeOptions)
	// differs names the cases whose check this component makes elsewhere, and why.
	differs map[string]string
}

func messages(err error) []string {
	if err == nil {
		return nil
	}
	if m, ok := err.(*packersdk.MultiError); ok {
		var out []string
		for _, e := range m.Errors {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

// components are every component with the shared options.
var components = []component{
	{
		name: "builder",
		base: map[string]interface{}{
			"region": "us-east-1", "source_ami": "ami-12345678", "instance_type": "m3.medium",
			"ami_name": "instancestore-test", "s3_bucket": "my-bundles", "ssh_username": "root",
			"skip_credential_validation": true, "access_key": "AKIAEXAMPLE", "secret_key": "s",
		},
		prepare: func(raw map[string]interface{}) ([]string, *driver.Options, *driver.VolumeOptions) {
			var c instancestore.Config
			_, err := c.Prepare(raw)
			return messages(err), &c.Options, &c.VolumeOptions
		},
	},
	{
		name: "provisioner",
		base: map[string]interface{}{
			"region": "us-east-1", "s3_bucket": "my-bundles",
			"skip_credential_validation": true, "access_key": "AKIAEXAMPLE", "secret_key": "s",
		},
		prepare: func(raw map[string]interface{}) ([]string, *driver.Options, *driver.VolumeOptions) {
			var c provisioner.Config
			err := c.Prepare(raw)
			return messages(err), &c.Options, &c.VolumeOptions
		},
	},
	{
		name: "import",
		base: map[string]interface{}{
			"region": "us-east-1", "ami_name": "instancestore-test", "s3_bucket": "my-bundles",
			"skip_credential_validation": true, "access_key": "AKIAEXAMPLE", "secret_key": "s",
		},
		prepare: func(raw map[string]interface{}) ([]string, *driver.Options, *driver.VolumeOptions) {
			var c importpp.Config
			err := c.Prepare(raw)
			return messages(err), &c.Options, nil
		},
		differs: map[string]string{
			"kernel on hvm": "the virtualization type comes from the image, so a kernel on an hvm disk is refused when the image is inspected",
		},
	},
}

// volumeOnly are the options of imaging a live volume (driver.VolumeOptions), which a
// component that bundles a local image does not have.
var volumeOnly = map[string]bool{
	"bundle_destination": true, "bundle_size": true, "bundle_exclude": true,
	"bundle_include": true, "bundle_filter": true, "bundle_partition": true, "agent_binary": true,
}

// TestOptionsSameInEveryComponent: the same setting gives the same error, word for
// word, in every component, and the same defaults.
func TestOptionsSameInEveryComponent(t *testing.T) {
	cases := []struct {
		name string
		set  map[string]interface{}
		want []string // exactly these errors; nil = valid
	}{
		{"defaults", nil, nil},
		{"no bucket", map[string]interface{}{"s3_bucket": ""}, []string{"s3_bucket is required: the S3 bucket that receives the bundle"}},
		{"bad bucket", map[string]interface{}{"s3_bucket": "My_Bucket"}, []string{`s3_bucket "My_Bucket" is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens`}},
		{"bad s3 prefix", map[string]interface{}{"s3_prefix": "a//b"}, []string{`s3_prefix "a//b" is not a clean S3 key prefix: use letters, digits and !_.*'()- separated by single slashes, without . or .. segments`}},
		{"bad account", map[string]interface{}{"account_id": "1234"}, []string{`account_id must be a 12-digit AWS account ID (hyphens allowed), got "1234"`}},
		{"bad bundle prefix", map[string]interface{}{"bundle_prefix": "a b"}, []string{`bundle_prefix "a b" may contain only letters, digits, dots, hyphens and underscores`}},
		{"cert without key", map[string]interface{}{"x509_cert_path": "/x.pem"}, []string{"x509_cert_path and x509_key_path go together: set both (to be able to unbundle the image later) or neither (a throw-away key pair)"}},
		{"key without cert", map[string]interface{}{"x509_key_path": "/x.pem"}, []string{"x509_cert_path and x509_key_path go together: set both (to be able to unbundle the image later) or neither (a throw-away key pair)"}},
		{"missing ec2 cert", map[string]interface{}{"ec2_cert_path": "/nonexistent.pem"}, []string{"ec2_cert_path: reading certificate: open /nonexistent.pem: no such file or directory"}},
		{"arm64", map[string]interface{}{"ami_architecture": "arm64"}, []string{`ami_architecture must be x86_64 or i386 (the instance types that boot instance store-backed AMIs are all x86), got "arm64"`}},
		{"level 10", map[string]interface{}{"bundle_compression_level": 10}, []string{"bundle_compression_level 10 is out of range: use 1 (fastest) to 9 (smallest), or 0 for the default (6)"}},
		{"level 9", map[string]interface{}{"bundle_compression_level": 9}, nil},
		{"ebs in ami mappings", map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdf", "volume_size": 8}}},
			[]string{"ami_block_device_mappings /dev/sdf: EBS volumes cannot be mapped in an instance store-backed AMI (its manifest maps only instance store volumes, and RegisterImage of a bundle takes no EBS snapshot or size); map instance store volumes with virtual_name (ephemeral0, ...), or add EBS volumes at launch time"}},
		{"instance store in ami mappings", map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdc", "virtual_name": "ephemeral1"}}}, nil},
		{"concurrency", map[string]interface{}{"upload_concurrency": 65}, []string{"upload_concurrency 65 is out of range: 1 to 64 parts at once (0 for the default, 4)"}},
		{"relative destination", map[string]interface{}{"bundle_destination": "tmp"}, []string{`bundle_destination "tmp" must be an absolute path on the instance`}},
		{"root destination", map[string]interface{}{"bundle_destination": "/"}, []string{"bundle_destination must not be /: it is left out of the image, so use a scratch directory such as /mnt or /tmp"}},
		{"too big", map[string]interface{}{"bundle_size": 20000}, []string{"bundle_size 20000 is out of range: give the image size in MiB, 1 to 10240 (EC2's 10 GiB limit for instance store-backed AMIs)"}},
		{"relative exclude", map[string]interface{}{"bundle_exclude": []string{"var"}}, []string{`bundle_exclude "var" must be an absolute path on the instance`}},
		{"relative include", map[string]interface{}{"bundle_include": []string{"etc"}}, []string{`bundle_include "etc" must be an absolute path on the instance`}},
		{"bad partition", map[string]interface{}{"bundle_partition": "dos"}, []string{`bundle_partition must be auto, mbr, gpt or none, got "dos"`}},
		{"each partition", map[string]interface{}{"bundle_partition": "gpt"}, nil},
		{"none on hvm", map[string]interface{}{"bundle_partition": "none"}, []string{"bundle_partition none does not boot as ami_virtualization_type hvm: an hvm image needs a partition table and boot code, use auto, mbr or gpt"}},
		{"kernel on hvm", map[string]interface{}{"ami_kernel_id": "aki-12345678"}, []string{`ami_kernel_id and ami_ramdisk_id apply to paravirtual AMIs only; remove them or set ami_virtualization_type = "paravirtual"`}},
		{"missing agent", map[string]interface{}{"agent_binary": "/nonexistent-agent"}, []string{"agent_binary: stat /nonexistent-agent: no such file or directory"}},
	}
	for _, comp := range components {
		for _, tc := range cases {
			t.Run(comp.name+"/"+tc.name, func(t *testing.T) {
				if why, ok := comp.differs[tc.name]; ok {
					t.Skipf("%s: %s", comp.name, why)
				}
				if _, _, v := comp.prepare(comp.base); v == nil {
					for k := range tc.set {
						if volumeOnly[k] {
							t.Skipf("%s has no %s (it images no live volume)", comp.name, k)
						}
					}
				}
				raw := map[string]interface{}{}
				for k, v := range comp.base {
					raw[k] = v
				}
				for k, v := range tc.set {
					raw[k] = v
				}
				got, o, v := comp.prepare(raw)
				if !slices.Equal(got, tc.want) {
					t.Fatalf("errors:\n got: %q\nwant: %q", got, tc.want)
				}
				if tc.set != nil {
					return
				}
				if v != nil && (v.BundlePartition != driver.PartitionAuto || v.BundleFilter.True()) {
					t.Errorf("defaults: bundle_partition %q, bundle_filter %v", v.BundlePartition, v.BundleFilter)
				}
				if o.UploadConcurrency != driver.DefaultUploadConcurrency || o.CompressionLevel != 0 {
					t.Errorf("defaults: upload_concurrency %d, bundle_compression_level %d", o.UploadConcurrency, o.CompressionLevel)
				}
				if req := o.Request("volume"); req.Name != o.BundlePrefix || req.Concurrency != 4 {
					t.Errorf("agent request %+v", req)
				}
			})
		}
	}
}
