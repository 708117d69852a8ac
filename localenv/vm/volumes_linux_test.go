package vm

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// diskArgs is the -blockdev/-device part of a qemu command line, one "kind value"
// line each, with the random instance store serial masked.
func diskArgs(args []string) string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-blockdev" || args[i] == "-device" || args[i] == "-drive" {
			if strings.HasPrefix(args[i+1], "virtio-rng") || strings.HasPrefix(args[i+1], "virtio-net") {
				continue
			}
			out = append(out, args[i]+" "+args[i+1])
		}
	}
	return regexp.MustCompile(`serial=AWS[0-9A-F]{17}`).ReplaceAllString(strings.Join(out, "\n"), "serial=AWS*")
}

// TestVolumeDisks: an EBS-backed instance's volumes are the guest's disks in Volumes
// order, each its file in place (no snapshot overlay), the root the boot disk; NVMe
// with EC2's serials on Nitro types (the instance store one from the simulator, not
// a second from the launcher's own table), virtio elsewhere.
func TestVolumeDisks(t *testing.T) {
	dir := t.TempDir()
	root := ec2sim.Volume{DeviceName: "/dev/xvda", VolumeID: "vol-0123456789abcdef0", Path: filepath.Join(dir, "root,1.img"), SizeGiB: 8, Root: true}
	data := ec2sim.Volume{DeviceName: "/dev/sdf", VolumeID: "vol-0fedcba9876543210", Path: filepath.Join(dir, "data.img"), SizeGiB: 1}
	store := ec2sim.Volume{DeviceName: "ephemeral0", Path: filepath.Join(dir, "store.img"), SizeGiB: 75, NVMe: true, InstanceStore: true}
	nvme := func(v ec2sim.Volume) ec2sim.Volume { v.NVMe = true; return v }
	for _, tc := range []struct {
		name, itype string
		vols        []ec2sim.Volume
		want        string
	}{
		{"m5d", "m5d.large", []ec2sim.Volume{nvme(root), nvme(data), store}, `-blockdev driver=raw,node-name=nvol0123456789abcdef0,discard=unmap,file.driver=file,file.filename=` + dir + `/root,,1.img,file.discard=unmap
-device nvme,drive=nvol0123456789abcdef0,id=dvol0123456789abcdef0,serial=vol0123456789abcdef0,bootindex=1
-blockdev driver=raw,node-name=nvol0fedcba9876543210,discard=unmap,file.driver=file,file.filename=` + dir + `/data.img,file.discard=unmap
-device nvme,drive=nvol0fedcba9876543210,id=dvol0fedcba9876543210,serial=vol0fedcba9876543210
-blockdev driver=raw,node-name=nstore0,discard=unmap,file.driver=file,file.filename=` + dir + `/store.img,file.discard=unmap
-device nvme,drive=nstore0,id=dstore0,serial=AWS*`},
		{"t2", "t2.micro", []ec2sim.Volume{root, data}, `-blockdev driver=raw,node-name=nvol0123456789abcdef0,discard=unmap,file.driver=file,file.filename=` + dir + `/root,,1.img,file.discard=unmap
-device virtio-blk-pci,drive=nvol0123456789abcdef0,id=dvol0123456789abcdef0,serial=vol0123456789abcdef0,bootindex=1
-blockdev driver=raw,node-name=nvol0fedcba9876543210,discard=unmap,file.driver=file,file.filename=` + dir + `/data.img,file.discard=unmap
-device virtio-blk-pci,drive=nvol0fedcba9876543210,id=dvol0fedcba9876543210,serial=vol0fedcba9876543210`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &VMLauncher{WorkDir: dir}
			v := &VM{id: "i-0123456789abcdef0", dir: t.TempDir(), disks: map[string]disk{}}
			spec := ec2sim.LaunchSpec{InstanceID: v.id, InstanceType: tc.itype, Virtualization: "hvm", Volumes: tc.vols}
			args, err := l.qemuArgs(context.Background(), v, spec, &Metadata{MAC: "02:00:00:00:00:01"}, Accel{})
			if err != nil {
				t.Fatal(err)
			}
			if got := diskArgs(args); got != tc.want {
				t.Errorf("disks:\n%s\nwant:\n%s", got, tc.want)
			}
			if len(v.disks) != 2 {
				t.Errorf("EBS disks recorded for hot-unplug: %v, want the two volumes", v.disks)
			}
		})
	}
}
