package importpp

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func testConfig(t *testing.T, set map[string]interface{}) *Config {
	t.Helper()
	raw := map[string]interface{}{
		"region": "us-east-1", "ami_name": "imported", "s3_bucket": "my-bundles",
		"skip_credential_validation": true, "access_key": "AKIAEXAMPLE", "secret_key": "s",
	}
	for k, v := range set {
		raw[k] = v
	}
	var c Config
	if err := c.Prepare(raw); err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestImportMappings: there is no instance to inherit from, so the AMI maps its root
// device only, unless ami_block_device_mappings adds instance store volumes; the
// manifest passes the format checks, in ec2-ami-tools' order.
func TestImportMappings(t *testing.T) {
	for _, tc := range []struct {
		name          string
		set           map[string]interface{}
		virt          string
		manifest, ec2 string
	}{
		{"root-only", nil, "hvm", "ami=xvda root=/dev/xvda", ""},
		{"ephemeral", map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{
			{"device_name": "/dev/sdc", "virtual_name": "ephemeral1"}, {"device_name": "sdb", "virtual_name": "ephemeral0"}, {"device_name": "/dev/sdd", "no_device": true}}},
			"paravirtual", "ami=sda1 ephemeral0=sdb ephemeral1=sdc root=/dev/sda1", "/dev/sdb=ephemeral0 /dev/sdc=ephemeral1 /dev/sdd=none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t, tc.set)
			mc := manifestConfig(c, "123456789012", tc.virt)
			cert, _, err := bundle.NewThrowawayUser()
			if err != nil {
				t.Fatal(err)
			}
			key, _ := bundle.NewKey()
			res := &bundle.Result{Name: "image", Digest: strings.Repeat("0", 40), Size: 1, BundledSize: 1,
				Parts: []bundle.PartInfo{{Index: 0, Name: "image.part.0", Size: 1, SHA1: strings.Repeat("0", 40)}}}
			m, err := bundle.NewManifest(res, mc, key, cert, cert)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := bundle.ParseManifest(m.Marshal())
			if err != nil {
				t.Fatalf("the manifest does not pass the format checks: %v", err)
			}
			var got []string
			for _, b := range parsed.BlockDeviceMappings {
				got = append(got, b.Virtual+"="+b.Device)
			}
			if s := strings.Join(got, " "); s != tc.manifest {
				t.Errorf("manifest maps %s, want %s", s, tc.manifest)
			}
			var ec2 []string
			for _, bdm := range driver.EC2Mappings(amiMappings(c)) {
				v := aws.ToString(bdm.VirtualName)
				if bdm.NoDevice != nil {
					v = "none"
				}
				ec2 = append(ec2, aws.ToString(bdm.DeviceName)+"="+v)
			}
			if s := strings.Join(ec2, " "); s != tc.ec2 {
				t.Errorf("RegisterImage maps %s, want %s", s, tc.ec2)
			}
		})
	}
}
