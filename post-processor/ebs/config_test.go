package ebspp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func baseRaw(t *testing.T) map[string]interface{} {
	key := filepath.Join(t.TempDir(), "pk.pem")
	if err := os.WriteFile(key, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]interface{}{
		"region": "us-east-1", "access_key": "AKID", "secret_key": "SECRET",
		"x509_key_path": key,
		"helper": map[string]interface{}{
			"source_ami": "ami-12345678", "instance_type": "t3.micro", "ssh_username": "admin",
		},
	}
}

// TestPrepare: a map config in, the exact errors out.
func TestPrepare(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(map[string]interface{})
		want []string
	}{
		"ok":               {func(map[string]interface{}) {}, nil},
		"no helper ami":    {func(m map[string]interface{}) { delete(m["helper"].(map[string]interface{}), "source_ami") }, []string{"helper: source_ami or source_ami_filter is required"}},
		"no key":           {func(m map[string]interface{}) { delete(m, "x509_key_path") }, []string{"x509_key_path is required"}},
		"missing key file": {func(m map[string]interface{}) { m["x509_key_path"] = "/nonexistent/pk.pem" }, []string{"x509_key_path: stat /nonexistent/pk.pem"}},
		"bad source":       {func(m map[string]interface{}) { m["source_ami"] = "i-123" }, []string{`source_ami "i-123" is not an AMI id`}},
		"bad volume type":  {func(m map[string]interface{}) { m["volume_type"] = "fast" }, []string{`volume_type "fast"`}},
		"all at once": {func(m map[string]interface{}) {
			m["volume_type"] = "fast"
			m["source_ami"] = "x"
			delete(m, "x509_key_path")
		}, []string{"volume_type", "source_ami", "x509_key_path is required"}},
	} {
		t.Run(name, func(t *testing.T) {
			raw := baseRaw(t)
			c.edit(raw)
			var cfg Config
			err := cfg.Prepare(raw)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.VolumeType != "gp3" || cfg.AMIName != "{{.SourceAMIName}}-ebs" {
					t.Errorf("defaults: %q %q", cfg.VolumeType, cfg.AMIName)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

type idArtifact struct{ packer.Artifact }

func (a idArtifact) Id() string        { return a.Artifact.(fakeID).id }
func (a idArtifact) BuilderId() string { return "test" }

type fakeID struct {
	packer.Artifact
	id string
}

func TestSourceAMI(t *testing.T) {
	in := idArtifact{fakeID{id: "eu-west-1:ami-0000000a,us-east-1:ami-0000000b"}}
	if got, err := sourceAMI("", in, "us-east-1"); err != nil || got != "ami-0000000b" {
		t.Errorf("got %q, %v", got, err)
	}
	if got, _ := sourceAMI("ami-1", in, "us-east-1"); got != "ami-1" {
		t.Errorf("source_ami does not win: %q", got)
	}
	if _, err := sourceAMI("", in, "ap-south-1"); err == nil || !strings.Contains(err.Error(), "no AMI in the build region ap-south-1 (only in eu-west-1, us-east-1)") {
		t.Errorf("got %v", err)
	}
	if _, err := sourceAMI("", nil, "us-east-1"); err == nil || !strings.Contains(err.Error(), "set source_ami") {
		t.Errorf("got %v", err)
	}
	if _, err := sourceAMI("", idArtifact{fakeID{id: "/tmp/disk.raw"}}, "us-east-1"); err == nil || !strings.Contains(err.Error(), "is not an AMI") {
		t.Errorf("got %v", err)
	}
}

// TestRegisterInput: root snapshot under the source's root device, instance store
// mappings kept, legacy-bios for hvm, kernel and ramdisk for paravirtual.
func TestRegisterInput(t *testing.T) {
	c := &Config{EBSVolumeOptions: steps.EBSVolumeOptions{VolumeType: "gp3"}}
	src := &sourceImage{Manifest: &bundle.Manifest{Size: 3<<30 + 1}, Image: &ec2types.Image{
		ImageId: aws.String("ami-1"), RootDeviceName: aws.String("/dev/xvda"), Architecture: ec2types.ArchitectureValuesX8664,
		VirtualizationType: ec2types.VirtualizationTypeHvm, EnaSupport: aws.Bool(true),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{
			{DeviceName: aws.String("/dev/sdb"), VirtualName: aws.String("ephemeral0")},
			{DeviceName: aws.String("/dev/xvda"), VirtualName: aws.String("root")},
		}}}
	in := registerInput(c, src, "n", "", "snap-1")
	if aws.ToString(in.RootDeviceName) != "/dev/xvda" || in.BootMode != ec2types.BootModeValuesLegacyBios || !aws.ToBool(in.EnaSupport) || in.KernelId != nil {
		t.Errorf("input %+v", in)
	}
	if len(in.BlockDeviceMappings) != 2 || aws.ToString(in.BlockDeviceMappings[0].Ebs.SnapshotId) != "snap-1" ||
		aws.ToInt32(in.BlockDeviceMappings[0].Ebs.VolumeSize) != 4 || aws.ToString(in.BlockDeviceMappings[1].VirtualName) != "ephemeral0" {
		t.Errorf("mappings %+v", in.BlockDeviceMappings)
	}
	src.Image.VirtualizationType = ec2types.VirtualizationTypeParavirtual
	src.Image.KernelId, src.Image.RamdiskId = aws.String("aki-1"), aws.String("ari-1")
	in = registerInput(c, src, "n", "", "snap-1")
	if in.BootMode != "" || aws.ToString(in.KernelId) != "aki-1" || aws.ToString(in.RamdiskId) != "ari-1" {
		t.Errorf("paravirtual input %+v", in)
	}
}
