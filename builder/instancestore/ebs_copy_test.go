package instancestore

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func TestPrepareEBSCopy(t *testing.T) {
	cases := []struct {
		name string
		raw  map[string]interface{}
		want []string
	}{
		{"valid", with("ebs_copy", map[string]interface{}{}), nil},
		{"bad volume type", with("ebs_copy", map[string]interface{}{"volume_type": "fast"}),
			[]string{`ebs_copy.volume_type "fast": want gp2, gp3, io1, io2, st1, sc1 or standard`}},
		{"negative size", with("ebs_copy", map[string]interface{}{"volume_size": -2}),
			[]string{"ebs_copy.volume_size -2: give a size in GiB, or leave it unset for the image size"}},
		{"same name", with("ebs_copy", map[string]interface{}{"ami_name": "instancestore-test"}),
			[]string{`ebs_copy.ami_name "instancestore-test" is ami_name too: an account's AMI names are unique in a region; give the EBS copy a name of its own (default: ami_name with -ebs)`}},
		{"root device", with("ebs_copy", map[string]interface{}{"root_device_name": "xvda"}),
			[]string{`ebs_copy.root_device_name "xvda": want a device name such as /dev/xvda or /dev/sda1`}},
		{"paravirtual", with("ami_virtualization_type", "paravirtual", "ebs_copy", map[string]interface{}{}),
			[]string{`ebs_copy needs ami_virtualization_type = "hvm": the EBS copy is for current instance types (Nitro: NVMe root, ENA), which boot hvm AMIs only; convert a paravirtual AMI with the instancestore-ebs post-processor`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, errs := prepare(t, tc.raw)
			if !slices.Equal(errs, tc.want) {
				t.Errorf("errors:\n  %s\nwant:\n  %s", strings.Join(errs, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestPrepareEBSCopyDefaults(t *testing.T) {
	c := testConfig(t, "ami_description", "from {{ .SourceAMI }}", "tags", map[string]string{"Name": "x"})
	if c.EBSCopy != nil {
		t.Fatalf("ebs_copy without the block: %+v", c.EBSCopy)
	}
	c = testConfig(t, "ami_description", "from {{ .SourceAMI }}", "tags", map[string]string{"Name": "x"}, "ebs_copy", map[string]interface{}{})
	e := c.EBSCopy
	if e == nil || e.AMIName != "instancestore-test-ebs" || e.AMIDescription != "from {{ .SourceAMI }}" || e.AMITags["Name"] != "x" ||
		e.VolumeType != "gp3" || e.VolumeSize != 0 || e.RootDeviceName != "/dev/xvda" || !aws.ToBool(e.ENASupport) {
		t.Errorf("defaults: %+v", e)
	}
	c = testConfig(t, "ebs_copy", map[string]interface{}{"ami_name": "ebs-{{ clean_resource_name \"a:b\" }}", "ena_support": false,
		"volume_type": "io2", "volume_size": 20, "tags": map[string]string{"Kind": "ebs"}})
	e = c.EBSCopy
	if e.AMIName != "ebs-a-b" || aws.ToBool(e.ENASupport) || e.VolumeType != "io2" || e.VolumeSize != 20 || e.AMITags["Kind"] != "ebs" {
		t.Errorf("set: %+v", e)
	}
}

func TestGeneratedDataEBSCopyAMI(t *testing.T) {
	if !slices.Contains(generatedDataNames(), "EBSCopyAMI") {
		t.Errorf("EBSCopyAMI missing from %v", generatedDataNames())
	}
}

// TestEBSCopyImage: what ebs_copy registers, from the config and the bundle.
func TestEBSCopyImage(t *testing.T) {
	c := testConfig(t, "ami_description", "from {{ .SourceAMI }}", "ami_block_device_mappings", []map[string]interface{}{
		{"device_name": "/dev/sdc", "virtual_name": "ephemeral1"},
	}, "ebs_copy", map[string]interface{}{"tags": map[string]string{"Src": "{{ .SourceAMIName }}"}})
	c.AMIArchitecture = "x86_64"
	st := new(multistep.BasicStateBag)
	st.Put(keyConfig, c)
	st.Put(keyUI, &packersdk.MockUi{})
	st.Put(keyRegion, "us-east-1")
	st.Put(keySourceImage, &ec2types.Image{ImageId: aws.String("ami-src"), Name: aws.String("base"), RootDeviceName: aws.String("/dev/sda1"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/sdb"), VirtualName: aws.String("ephemeral0")}}})
	if _, err := ebsCopyImage(st); err == nil || !strings.Contains(err.Error(), "no bundle was uploaded") {
		t.Errorf("without a bundle: %v", err)
	}
	st.Put(keyBundleResult, &driver.Result{Manifest: &bundle.Manifest{Size: 2<<30 + 7}})
	im, err := ebsCopyImage(st)
	if err != nil {
		t.Fatal(err)
	}
	in := im.RegisterInput("snap-1")
	if aws.ToString(in.Name) != "instancestore-test-ebs" || aws.ToString(in.Description) != "from ami-src" || aws.ToString(in.RootDeviceName) != "/dev/xvda" ||
		in.BootMode != ec2types.BootModeValuesLegacyBios || !aws.ToBool(in.EnaSupport) || aws.ToString(in.VirtualizationType) != "hvm" ||
		in.Architecture != ec2types.ArchitectureValuesX8664 || in.ImageLocation != nil || in.KernelId != nil {
		t.Errorf("input %+v", in)
	}
	var got []string
	for _, m := range in.BlockDeviceMappings {
		if m.Ebs != nil {
			got = append(got, aws.ToString(m.DeviceName)+" "+aws.ToString(m.Ebs.SnapshotId)+" "+string(m.Ebs.VolumeType)+" "+
				map[bool]string{true: "3GiB", false: "?"}[aws.ToInt32(m.Ebs.VolumeSize) == 3])
		} else {
			got = append(got, aws.ToString(m.DeviceName)+" "+aws.ToString(m.VirtualName))
		}
	}
	sort.Strings(got)
	if want := []string{"/dev/sdb ephemeral0", "/dev/sdc ephemeral1", "/dev/xvda snap-1 gp3 3GiB"}; !slices.Equal(got, want) {
		t.Errorf("mappings %q, want %q", got, want)
	}
	if len(in.TagSpecifications) != 1 || aws.ToString(in.TagSpecifications[0].Tags[0].Value) != "base" {
		t.Errorf("tags %+v", in.TagSpecifications)
	}
}

func TestArtifactWithEBSCopy(t *testing.T) {
	a := testArtifact()
	a.EBSCopy = &EBSCopyAMI{Region: "us-west-2", AMI: "ami-0", Snapshot: "snap-9"}
	// The instance store-backed AMIs first: a consumer taking a region's first AMI
	// gets the instance store-backed one.
	if got, want := a.Id(), "eu-west-1:ami-1,us-west-2:ami-2,us-west-2:ami-0"; got != want {
		t.Errorf("Id() = %q, want %q", got, want)
	}
	if s := a.String(); !strings.HasSuffix(s, "EBS-backed AMI (ebs_copy):\nus-west-2: ami-0 (snapshot snap-9)\n") {
		t.Errorf("String() = %q", s)
	}
	images := a.State(registryimage.ArtifactStateURI).([]*registryimage.Image)
	if len(images) != 3 {
		t.Fatalf("%d HCP images, want 3", len(images))
	}
	e := images[2]
	if e.ImageID != "ami-0" || e.ProviderRegion != "us-west-2" || e.Labels["root_device_type"] != "ebs" || e.Labels["snapshot_id"] != "snap-9" || e.SourceImageID != "ami-src" {
		t.Errorf("HCP image of the EBS copy: %+v", e)
	}
	for _, img := range images {
		if err := img.Validate(); err != nil {
			t.Error(err)
		}
	}
	if md := a.State("atlas.artifact.metadata").(map[string]string); md["ebs_copy.region.us-west-2"] != "ami-0" {
		t.Errorf("atlas metadata %v", md)
	}
}
