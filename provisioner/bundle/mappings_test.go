package bundle

import (
	"bytes"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// TestMappingPlan: the provisioner's AMI inherits the instance store volumes the
// instance's metadata service lists; ami_block_device_mappings' no_device drops one;
// without a metadata service only the root device is mapped.
func TestMappingPlan(t *testing.T) {
	report := &agent.MetadataReport{Read: true, BlockDeviceMapping: map[string]string{
		"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb", "ephemeral1": "sdc"}}
	for _, tc := range []struct {
		name   string
		set    map[string]interface{}
		report *agent.MetadataReport
		want   string
	}{
		{"inherits", nil, report, "ami=sda1 root=/dev/sda1 ephemeral0=sdb ephemeral1=sdc"},
		{"no-device-drops", map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdc", "no_device": true}}},
			report, "ami=sda1 root=/dev/sda1 ephemeral0=sdb"},
		{"override", map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdb", "virtual_name": "ephemeral3"}}},
			report, "ami=sda1 root=/dev/sda1 ephemeral3=sdb ephemeral1=sdc"},
		{"no-metadata-service", nil, &agent.MetadataReport{Note: "no metadata service answered"}, "ami=sda1 root=/dev/sda1"},
		{"bundle-image", map[string]interface{}{"bundle_image": "/var/tmp/disk.img"}, nil, "ami=sda1 root=/dev/sda1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := minimal()
			for k, v := range tc.set {
				raw[k] = v
			}
			var c Config
			if err := c.Prepare(raw); err != nil {
				t.Fatal(err)
			}
			p := mappingPlan(&c)
			var out bytes.Buffer
			ms := p.Resolve(tc.report, &packersdk.BasicUi{Writer: &out, ErrorWriter: &out})
			var got []string
			for _, m := range driver.ManifestMappings(p.RootDevice, ms) {
				got = append(got, m.Virtual+"="+m.Device)
			}
			if s := strings.Join(got, " "); s != tc.want {
				t.Errorf("the manifest maps %s, want %s", s, tc.want)
			}
			if strings.Contains(out.String(), "Warning") {
				t.Errorf("warned: %s", out.String())
			}
		})
	}
}
