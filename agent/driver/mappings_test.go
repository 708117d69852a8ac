package driver

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	awscommon "github.com/hashicorp/packer-plugin-amazon/common"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

func mappingsOf(ms []Mapping) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.String())
	}
	return out
}

func TestAMIMappings(t *testing.T) {
	inherited := []Mapping{{Device: "/dev/sdb", Virtual: "ephemeral0"}}
	cases := []struct {
		name         string
		launch, ami  awscommon.BlockDevices
		want         []string
		wantManifest []string
	}{
		{"inherited", nil, nil, []string{"ephemeral0 -> /dev/sdb"}, []string{"ami=sda1", "ephemeral0=sdb", "root=/dev/sda1"}},
		{"launch-adds", awscommon.BlockDevices{{DeviceName: "sdc", VirtualName: "ephemeral1"}}, nil,
			[]string{"ephemeral0 -> /dev/sdb", "ephemeral1 -> /dev/sdc"}, []string{"ami=sda1", "ephemeral0=sdb", "ephemeral1=sdc", "root=/dev/sda1"}},
		{"launch-no-device", awscommon.BlockDevices{{DeviceName: "/dev/sdb", NoDevice: true}}, nil,
			nil, []string{"ami=sda1", "root=/dev/sda1"}},
		{"ami-no-device-drops", nil, awscommon.BlockDevices{{DeviceName: "/dev/sdb", NoDevice: true}},
			nil, []string{"ami=sda1", "root=/dev/sda1"}},
		{"ami-no-device-other", nil, awscommon.BlockDevices{{DeviceName: "/dev/sdd", NoDevice: true}},
			[]string{"ephemeral0 -> /dev/sdb", "/dev/sdd (no device)"}, []string{"ami=sda1", "ephemeral0=sdb", "root=/dev/sda1"}},
		{"ami-overrides", nil, awscommon.BlockDevices{{DeviceName: "/dev/sdb", VirtualName: "ephemeral2"}},
			[]string{"ephemeral2 -> /dev/sdb"}, []string{"ami=sda1", "ephemeral2=sdb", "root=/dev/sda1"}},
		{"swap-in-manifest-only", nil, awscommon.BlockDevices{{DeviceName: "sda3", VirtualName: "swap"}},
			[]string{"swap -> /dev/sda3", "ephemeral0 -> /dev/sdb"}, []string{"ami=sda1", "ephemeral0=sdb", "root=/dev/sda1", "swap=sda3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := AMIMappings(ApplyLaunchMappings(inherited, tc.launch), tc.ami)
			if s := mappingsOf(got); !slices.Equal(s, tc.want) {
				t.Errorf("mappings %v, want %v", s, tc.want)
			}
			for _, m := range EC2Mappings(got) {
				if v := m.VirtualName; v != nil && !strings.HasPrefix(*v, "ephemeral") {
					t.Errorf("RegisterImage gets virtual name %s: EC2 takes ephemeralN only", *v)
				}
			}
			// Through the manifest writer and the strict parser: in ec2-ami-tools' order.
			m := manifestWith(t, ManifestMappings("/dev/sda1", got))
			var s []string
			for _, b := range m.BlockDeviceMappings {
				s = append(s, b.Virtual+"="+b.Device)
			}
			if !slices.Equal(s, tc.wantManifest) {
				t.Errorf("manifest %v, want %v (in this order)", s, tc.wantManifest)
			}
		})
	}
}

func manifestWith(t *testing.T, bdm []bundle.BlockDeviceMapping) *bundle.Manifest {
	t.Helper()
	cert, _, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := bundle.NewKey()
	res := &bundle.Result{Name: "image", Digest: strings.Repeat("0", 40), Size: 1, BundledSize: 1,
		Parts: []bundle.PartInfo{{Index: 0, Name: "image.part.0", Size: 1, SHA1: strings.Repeat("0", 40)}}}
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{User: "123456789012", Architecture: "x86_64", BlockDeviceMappings: bdm}, key, cert, cert)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := bundle.ParseManifest(m.Marshal())
	if err != nil {
		t.Fatalf("the manifest does not pass the format checks: %v", err)
	}
	return parsed
}

// TestManifestMappingsAsEC2AMITools: the manifest of an AMI inheriting ephemeral0 ->
// sdb carries the very <block_device_mapping> ec2-ami-tools 1.5.3 wrote for the same
// mapping (bundle/testdata's sample).
func TestManifestMappingsAsEC2AMITools(t *testing.T) {
	sample, err := os.ReadFile(filepath.Join("..", "..", "bundle", "testdata", "ec2-ami-tools-1.5.3-sample", "bundle", "sample.manifest.xml"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`<block_device_mapping>.*</block_device_mapping>`)
	want := re.Find(sample)
	m := manifestWith(t, ManifestMappings("/dev/sda1", []Mapping{{Device: "/dev/sdb", Virtual: "ephemeral0"}}))
	if got := re.Find(m.Marshal()); string(got) != string(want) {
		t.Errorf("our <block_device_mapping>\n%s\nec2-ami-tools'\n%s", got, want)
	}
}

func TestCompareMappings(t *testing.T) {
	computed := []Mapping{{Device: "/dev/sdb", Virtual: "ephemeral0"}}
	for _, tc := range []struct {
		name     string
		instance []Mapping
		want     []string
	}{
		{"same", []Mapping{{Device: "/dev/sdb", Virtual: "ephemeral0"}}, nil},
		{"xvd-is-sd", []Mapping{{Device: "/dev/xvdb", Virtual: "ephemeral0"}}, nil},
		{"extra", []Mapping{{Device: "/dev/sdb", Virtual: "ephemeral0"}, {Device: "/dev/sdc", Virtual: "ephemeral1"}},
			[]string{"the instance's metadata service lists ephemeral1 -> /dev/sdc, which the source AMI lack"}},
		{"moved", []Mapping{{Device: "/dev/sdc", Virtual: "ephemeral0"}},
			[]string{"the instance's metadata service lists ephemeral0 -> /dev/sdc, the source AMI say ephemeral0 -> /dev/sdb"}},
		{"missing", nil, []string{"the source AMI map ephemeral0 -> /dev/sdb, which the instance's metadata service does not list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CompareMappings(computed, tc.instance, "the source AMI"); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLocalRunMappings runs the agent with the local environment's metadata service
// listing ephemeral0 and ephemeral1: the host, knowing only ephemeral0, warns naming
// both; the provisioner's way (FromInstance) inherits both.
func TestLocalRunMappings(t *testing.T) {
	agentBin := buildLocalAgent(t)
	md := &vm.Metadata{HTTPTokens: "required", BlockDevices: map[string]string{"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb", "ephemeral1": "sdc"}}
	imds := httptest.NewServer(vm.NewMetadataServer(md))
	defer imds.Close()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)
	inherited := []Mapping{{Device: "/dev/sdb", Virtual: "ephemeral0"}}
	for i, tc := range []struct {
		name         string
		plan         MappingPlan
		wantWarning  string
		wantManifest string
	}{
		{"cross-check", MappingPlan{RootDevice: "/dev/sda1", Inherited: inherited, InheritedFrom: "the source AMI's block device mappings"},
			"ephemeral1 -> /dev/sdc, which the source AMI's block device mappings lack", "ami=sda1 ephemeral0=sdb root=/dev/sda1"},
		{"from-instance", MappingPlan{RootDevice: "/dev/sda1", FromInstance: true}, "", "ami=sda1 ephemeral0=sdb ephemeral1=sdc root=/dev/sda1"},
		{"from-instance-no-device", MappingPlan{RootDevice: "/dev/sda1", FromInstance: true,
			AMI: awscommon.BlockDevices{{DeviceName: "/dev/sdc", NoDevice: true}}}, "", "ami=sda1 ephemeral0=sdb root=/dev/sda1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, bk := gofakes3Bucket(t)
			ui := newRecordingUi()
			plan := tc.plan
			res, err := Run(context.Background(), Config{
				Comm: &localComm{}, Ui: ui, Bucket: bk, AgentBinary: agentBin, RemoteFolder: dir,
				Job:      agent.Request{Mode: agent.ModeImage, Name: fmt.Sprintf("disk%d", i), Image: img, MetadataURL: imds.URL},
				Manifest: bundle.ManifestConfig{User: "123456789012"}, Mappings: &plan,
			})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, ui)
			}
			if res.Metadata == nil || !res.Metadata.Read || res.Metadata.BlockDeviceMapping["ephemeral1"] != "sdc" {
				t.Errorf("the agent reported %+v, want the metadata service's mapping", res.Metadata)
			}
			warned := strings.Contains(ui.String(), "Warning:")
			if tc.wantWarning == "" && warned || tc.wantWarning != "" && !strings.Contains(ui.String(), tc.wantWarning) {
				t.Errorf("UI:\n%s\nwant warning %q", ui, tc.wantWarning)
			}
			m, err := bk.GetManifest(context.Background(), fmt.Sprintf("disk%d", i))
			if err != nil {
				t.Fatalf("the uploaded manifest does not parse: %v", err)
			}
			var got []string
			for _, b := range m.BlockDeviceMappings {
				got = append(got, b.Virtual+"="+b.Device)
			}
			if s := strings.Join(got, " "); s != tc.wantManifest {
				t.Errorf("manifest maps %s, want %s", s, tc.wantManifest)
			}
		})
	}
}
