package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// NVMe model numbers on EC2. qemu 7.2's nvme device has no model property (its
// controllers all say "QEMU NVMe Ctrl"): the serial tells the two kinds apart, as
// on EC2, where the EBS serial is the volume id without its dash and the instance
// store's starts with AWS.
const (
	EBSNVMeModel   = "Amazon Elastic Block Store"
	StoreNVMeModel = "Amazon EC2 NVMe Instance Storage"
)

// disk is one file-backed disk of a guest: qemu's block node and the device on it.
type disk struct {
	node, dev, serial string
	path              string
	nvme              bool
}

// volumeDisk is how a Volume appears in the guest: an NVMe controller (Nitro) with
// EC2's serial, or a virtio disk whose serial is the same (Xen's blkfront has none;
// qemu cannot name a disk xvdf, so the guest sees vdb, vdc, ... in Volumes order and
// finds a volume by /dev/disk/by-id/virtio-vol...).
func volumeDisk(v ec2sim.Volume, index int) disk {
	d := disk{path: v.Path, nvme: v.NVMe}
	if v.InstanceStore {
		d.serial = "AWS" + strings.ToUpper(randomHex(17))
		d.node, d.dev = fmt.Sprintf("nstore%d", index), fmt.Sprintf("dstore%d", index)
		return d
	}
	// vol-0123456789abcdef0 -> vol0123456789abcdef0: 20 characters, the most both
	// NVMe and virtio serials hold.
	d.serial = strings.Replace(v.VolumeID, "-", "", 1)
	d.node, d.dev = "n"+d.serial, "d"+d.serial
	return d
}

// blockdevArg is the -blockdev option of a disk: its raw file in place, writeback
// cache, discard passed through (the Volume contract: no copy, no backing chain).
func (d disk) blockdevArg() string {
	return "driver=raw,node-name=" + d.node + ",discard=unmap,file.driver=file,file.filename=" + qemuEscape(d.path) + ",file.discard=unmap"
}

// deviceArg is the -device option; bootindex > 0 makes it the boot disk.
func (d disk) deviceArg(bootindex int) string {
	s := d.driver() + ",drive=" + d.node + ",id=" + d.dev + ",serial=" + d.serial
	if bootindex > 0 {
		s += fmt.Sprintf(",bootindex=%d", bootindex)
	}
	return s
}

func (d disk) driver() string {
	if d.nvme {
		return "nvme"
	}
	return "virtio-blk-pci"
}

// rootVolume is the EBS root volume of spec, if any.
func rootVolume(spec ec2sim.LaunchSpec) *ec2sim.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Root && !spec.Volumes[i].InstanceStore {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// volumeArgs makes spec's Volumes disks of the guest in their order, the root one
// the boot disk, and records them in v for hot-unplug.
func (v *VM) volumeArgs(spec ec2sim.LaunchSpec) []string {
	var args []string
	store := 0
	for _, vol := range spec.Volumes {
		var d disk
		if vol.InstanceStore {
			d = volumeDisk(vol, store)
			store++
		} else {
			d = volumeDisk(vol, 0)
			v.disks[vol.VolumeID] = d
		}
		boot := 0
		if vol.Root && !vol.InstanceStore {
			boot = 1
		}
		args = append(args, "-blockdev", d.blockdevArg(), "-device", d.deviceArg(boot))
	}
	return args
}

// AttachVolume hot-plugs vol into the running guest (ec2sim.VolumeAttacher): QMP
// blockdev-add of its file, then device_add of an NVMe controller (Nitro) or a
// virtio disk on the PCI bus, which the guest's ACPI PCI hot-plug picks up.
func (v *VM) AttachVolume(ctx context.Context, vol ec2sim.Volume) error {
	if vol.VolumeID == "" || vol.Path == "" || vol.InstanceStore {
		return fmt.Errorf("vm %s: AttachVolume needs an EBS volume with its id and file (got %+v)", v.id, vol)
	}
	v.hotMu.Lock()
	defer v.hotMu.Unlock()
	if _, ok := v.disks[vol.VolumeID]; ok {
		return fmt.Errorf("vm %s: %s is already attached", v.id, vol.VolumeID)
	}
	d := volumeDisk(vol, 0)
	if _, err := v.qmp.Exec(ctx, "blockdev-add", map[string]any{"driver": "raw", "node-name": d.node, "discard": "unmap",
		"file": map[string]any{"driver": "file", "filename": d.path, "discard": "unmap"}}); err != nil {
		return fmt.Errorf("vm %s: attaching %s (%s): %w", v.id, vol.VolumeID, d.path, err)
	}
	if _, err := v.qmp.Exec(ctx, "device_add", map[string]any{"driver": d.driver(), "id": d.dev, "drive": d.node, "serial": d.serial}); err != nil {
		if _, derr := v.qmp.Exec(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": d.node}); derr != nil {
			err = errors.Join(err, derr)
		}
		return fmt.Errorf("vm %s: attaching %s: %w", v.id, vol.VolumeID, err)
	}
	v.disks[vol.VolumeID] = d
	return nil
}

// DetachVolume unplugs vol (ec2sim.VolumeAttacher): device_del asks the guest to let
// the device go (ACPI eject), DEVICE_DELETED says it did, and blockdev-del closes the
// file (flushing what qemu cached). When the guest never lets go within ctx, the
// device stays and the error says so.
func (v *VM) DetachVolume(ctx context.Context, vol ec2sim.Volume) error {
	v.hotMu.Lock()
	defer v.hotMu.Unlock()
	d, ok := v.disks[vol.VolumeID]
	if !ok {
		return fmt.Errorf("vm %s: %s is not one of its disks", v.id, vol.VolumeID)
	}
	from := v.qmp.EventCount()
	if _, err := v.qmp.Exec(ctx, "device_del", map[string]any{"id": d.dev}); err != nil {
		return fmt.Errorf("vm %s: detaching %s: %w", v.id, vol.VolumeID, err)
	}
	err := v.qmp.WaitEvent(ctx, from, "DEVICE_DELETED", func(data json.RawMessage) bool {
		var e struct{ Device string }
		return json.Unmarshal(data, &e) == nil && e.Device == d.dev
	})
	if err != nil {
		return fmt.Errorf("vm %s: detaching %s: the guest did not release the device: %w", v.id, vol.VolumeID, err)
	}
	if _, err := v.qmp.Exec(ctx, "blockdev-del", map[string]any{"node-name": d.node}); err != nil {
		return fmt.Errorf("vm %s: detaching %s: %w", v.id, vol.VolumeID, err)
	}
	delete(v.disks, vol.VolumeID)
	return nil
}
