package instancestore

import (
	"bytes"
	"context"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

func mappingStrings(ms []ec2types.BlockDeviceMapping) []string {
	var out []string
	for _, m := range ms {
		v := aws.ToString(m.VirtualName)
		if m.NoDevice != nil {
			v = "none"
		}
		out = append(out, aws.ToString(m.DeviceName)+"="+v)
	}
	slices.Sort(out)
	return out
}

// TestInheritedMappings registers AMIs from a source AMI mapping ephemeral0 -> sdb (the
// simulator's seeded AMIs do) and checks DescribeImages and the manifest.
func TestInheritedMappings(t *testing.T) {
	s := startSim(t)
	s.source = seededImage(t, s)
	if got := mappingStrings(s.source.BlockDeviceMappings); !slices.Contains(got, "/dev/sdb=ephemeral0") {
		t.Fatalf("the seeded source AMI maps %v, want /dev/sdb=ephemeral0", got)
	}
	eph1 := []map[string]interface{}{{"device_name": "/dev/sdc", "virtual_name": "ephemeral1"}}
	dropSdb := []map[string]interface{}{{"device_name": "/dev/sdb", "no_device": true}}
	cases := []struct {
		name string
		kv   []interface{}
		want []string
		// the manifest's mappings, in the order ec2-ami-tools writes them
		manifest []string
	}{
		{"inherited", nil, []string{"/dev/sdb=ephemeral0"}, []string{"ami=sda1", "ephemeral0=sdb", "root=/dev/sda1"}},
		{"launch-adds-ephemeral1", []interface{}{"launch_block_device_mappings", eph1},
			[]string{"/dev/sdb=ephemeral0", "/dev/sdc=ephemeral1"}, []string{"ami=sda1", "ephemeral0=sdb", "ephemeral1=sdc", "root=/dev/sda1"}},
		{"no-device-drops", []interface{}{"ami_block_device_mappings", dropSdb}, nil, []string{"ami=sda1", "root=/dev/sda1"}},
		{"override-by-device", []interface{}{"ami_block_device_mappings", []map[string]interface{}{{"device_name": "/dev/sdb", "virtual_name": "ephemeral2"}}},
			[]string{"/dev/sdb=ephemeral2"}, []string{"ami=sda1", "ephemeral2=sdb", "root=/dev/sda1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kv := append([]interface{}{"ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "mapped-" + tc.name}, tc.kv...)
			c := testConfig(t, kv...)
			bucket := "map-" + tc.name
			s.bundleConfig = c
			loc := s.uploadBundle(t, bucket, c.S3Prefix, c.BundlePrefix)
			st, _ := s.state(c)
			st.Put(keySourceImage, s.source)
			st.Put(keyBundle, loc)
			c.AMIArchitecture = "x86_64"
			if (&steps.StepRegisterAMI{Input: registerInput, PollingConfig: new(awscommon.AWSPollingConfig)}).Run(context.Background(), st) != multistep.ActionContinue {
				t.Fatalf("register: %v", st.Get(keyError))
			}
			imgs := s.images(t, c.AMIName)
			if len(imgs) != 1 {
				t.Fatalf("%d images", len(imgs))
			}
			if got := mappingStrings(imgs[0].BlockDeviceMappings); !slices.Equal(got, tc.want) {
				t.Errorf("the new AMI maps %v, want %v", got, tc.want)
			}
			b, err := s3bundle.New(s.cfg, s.region, bucket, c.S3Prefix, s3bundle.Options{PathStyle: true})
			if err != nil {
				t.Fatal(err)
			}
			m, err := b.GetManifest(context.Background(), c.BundlePrefix)
			if err != nil {
				t.Fatalf("the manifest with inherited mappings does not parse: %v", err)
			}
			var got []string
			for _, bdm := range m.BlockDeviceMappings {
				got = append(got, bdm.Virtual+"="+bdm.Device)
			}
			if !slices.Equal(got, tc.manifest) {
				t.Errorf("manifest mappings %v, want %v (in this order)", got, tc.manifest)
			}
		})
	}
}

// TestMappingsCrossCheck: the instance's metadata service (as the agent reports it)
// lists ephemeral1, which the source AMI (ephemeral0 -> sdb) lacks: the builder warns
// naming both, and the new AMI keeps what the source AMI and the options say.
func TestMappingsCrossCheck(t *testing.T) {
	c := testConfig(t)
	src := &ec2types.Image{RootDeviceName: aws.String("/dev/sda1"), BlockDeviceMappings: []ec2types.BlockDeviceMapping{
		{DeviceName: aws.String("/dev/sda1")},
		{DeviceName: aws.String("sdb"), VirtualName: aws.String("ephemeral0")},
	}}
	st := new(multistep.BasicStateBag)
	st.Put(keyBucket, (*s3bundle.Bucket)(nil))
	st.Put(keyAccountID, "123456789012")
	st.Put(keySourceImage, src)
	dc, err := driverConfig(c, nil, nil, st)
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	u := &packersdk.BasicUi{Writer: new(bytes.Buffer), ErrorWriter: &errOut}
	got := dc.Mappings.Resolve(&agent.MetadataReport{Read: true, BlockDeviceMapping: map[string]string{
		"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb", "ephemeral1": "sdc"}}, u)
	if s := driver.EC2Mappings(got); len(s) != 1 || aws.ToString(s[0].VirtualName) != "ephemeral0" {
		t.Errorf("the new AMI maps %v, want ephemeral0 only", mappingStrings(s))
	}
	out := errOut.String()
	if !strings.Contains(out, "ephemeral1 -> /dev/sdc") || !strings.Contains(out, "source AMI's block device mappings") || !strings.Contains(out, "ephemeral0 -> /dev/sdb") {
		t.Errorf("the warning should name the instance's ephemeral1 and the source AMI's mapping (ephemeral0 -> /dev/sdb):\n%s", out)
	}
	// The metadata service agrees: no warning.
	errOut.Reset()
	dc.Mappings.Resolve(&agent.MetadataReport{Read: true, BlockDeviceMapping: map[string]string{"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "xvdb"}}, u)
	if s := errOut.String(); s != "" {
		t.Errorf("warned although the instance agrees:\n%s", s)
	}
}
