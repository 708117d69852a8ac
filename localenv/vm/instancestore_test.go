package vm

import (
	"fmt"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// TestPlanInstanceStore: disks appear per the instance type's table and only where the
// AMI maps ephemeralN (within the type's count), in device name order.
func TestPlanInstanceStore(t *testing.T) {
	sdb := ec2sim.DeviceMapping{DeviceName: "/dev/sdb", VirtualName: "ephemeral0"}
	sdc := ec2sim.DeviceMapping{DeviceName: "/dev/sdc", VirtualName: "ephemeral1"}
	sdd := ec2sim.DeviceMapping{DeviceName: "/dev/sdd", VirtualName: "ephemeral2"}
	ebs := ec2sim.DeviceMapping{DeviceName: "/dev/sdf"}
	for _, tc := range []struct {
		itype string
		maps  []ec2sim.DeviceMapping
		want  string
	}{
		{"t2.micro", []ec2sim.DeviceMapping{sdb}, "[]"},
		{"t3.micro", []ec2sim.DeviceMapping{sdb}, "[]"},
		{"m5.large", []ec2sim.DeviceMapping{sdb}, "[]"},
		{"m1.small", []ec2sim.DeviceMapping{sdb}, "[ephemeral0@/dev/sdb:160G:ext3]"},
		{"m1.small", nil, "[]"},
		{"m1.small", []ec2sim.DeviceMapping{ebs}, "[]"},
		{"m3.medium", []ec2sim.DeviceMapping{sdb, sdc}, "[ephemeral0@/dev/sdb:4G:ext3]"},
		{"m3.large", []ec2sim.DeviceMapping{sdb}, "[ephemeral0@/dev/sdb:32G:ext3]"},
		{"c3.large", []ec2sim.DeviceMapping{sdc, sdb, sdd}, "[ephemeral0@/dev/sdb:16G:ext3 ephemeral1@/dev/sdc:16G:ext3]"},
		{"c3.large", []ec2sim.DeviceMapping{sdc}, "[ephemeral1@/dev/sdc:16G:ext3]"},
		{"r3.large", []ec2sim.DeviceMapping{sdb}, "[ephemeral0@/dev/sdb:32G:]"},
		{"m5d.large", nil, "[ephemeral0@:75G:nvme]"},
		{"c5d.large", []ec2sim.DeviceMapping{sdb}, "[ephemeral0@/dev/sdb:50G:nvme]"},
	} {
		var got []string
		for _, d := range planInstanceStore(tc.itype, tc.maps) {
			f := d.Format
			if d.NVMe {
				f = "nvme"
			}
			got = append(got, fmt.Sprintf("%s@%s:%dG:%s", d.VirtualName, d.DeviceName, d.SizeBytes>>30, f))
		}
		if s := fmt.Sprint(got); s != tc.want {
			t.Errorf("%s with %v: %s, want %s", tc.itype, tc.maps, s, tc.want)
		}
	}
}

// TestPVCmdline: Xen's partition-less root and console become the VM's.
func TestPVCmdline(t *testing.T) {
	for in, want := range map[string]string{
		"root=/dev/xvda1 ro console=hvc0":          "root=/dev/vda ro console=hvc0 console=ttyS0 no_timer_check",
		"ro root=/dev/sda1":                        "ro root=/dev/vda console=ttyS0 no_timer_check",
		"root=LABEL=cloudimg-rootfs console=ttyS0": "root=LABEL=cloudimg-rootfs console=ttyS0 no_timer_check",
		"root=UUID=0a-1b ro":                       "root=UUID=0a-1b ro console=ttyS0 no_timer_check",
		"root=/dev/xvda1x":                         "root=/dev/xvda1x console=ttyS0 no_timer_check",
	} {
		if got := pvCmdline(in); got != want {
			t.Errorf("pvCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}
