package ec2sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// nsDisk is a volume the namespace launcher made visible inside an instance: a host
// loop device on the volume's file and a block node of it in the instance's /dev.
type nsDisk struct {
	vol  Volume
	loop string // /dev/loopN on the host
	node string // its name in the instance's /dev: nvme1n1, xvdf
}

// guestDiskName is the name the namespace launcher gives a non-root volume in the
// instance's /dev, as the guest kernel would name it: nvmeNn1 on Nitro types (N
// counting from 1, the root being nvme0n1), else the Xen front-end's name (sdf ->
// xvdf, xvdf stays).
func guestDiskName(v Volume, nvmeIndex int) string {
	if v.NVMe {
		return fmt.Sprintf("nvme%dn1", nvmeIndex)
	}
	base := strings.TrimPrefix(v.DeviceName, "/dev/")
	if strings.HasPrefix(base, "sd") {
		return "xvd" + strings.TrimPrefix(base, "sd")
	}
	return base
}

// attachDisk binds v's file to a host loop device and creates its node in the
// instance's /dev.
func (n *nsInstance) attachDisk(ctx context.Context, v Volume) error {
	n.diskMu.Lock()
	defer n.diskMu.Unlock()
	for _, d := range n.disks {
		if d.vol.Path == v.Path {
			return fmt.Errorf("%s is already attached as /dev/%s", v.VolumeID, d.node)
		}
	}
	used := map[string]bool{}
	for _, d := range n.disks {
		used[d.node] = true
	}
	idx := 1
	for v.NVMe && used[guestDiskName(v, idx)] {
		idx++
	}
	name := guestDiskName(v, idx)
	if used[name] {
		return fmt.Errorf("/dev/%s is already in use in the instance (attaching %s)", name, v.DeviceName)
	}
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", v.Path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("losetup for %s (%s): %v: %s", v.DeviceName, v.Path, err, out)
	}
	loop := strings.TrimSpace(string(out))
	detachLoop := func() {
		exec.Command("losetup", "-d", loop).Run()
	}
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		detachLoop()
		return fmt.Errorf("stat %s: %w", loop, err)
	}
	dev, err := instanceDevDir(n.inst.NetNS())
	if err != nil {
		detachLoop()
		return err
	}
	if err := unix.Mknod(filepath.Join(dev, name), unix.S_IFBLK|0o660, int(st.Rdev)); err != nil {
		detachLoop()
		return fmt.Errorf("creating /dev/%s in the instance for %s: %w", name, v.DeviceName, err)
	}
	n.disks = append(n.disks, nsDisk{vol: v, loop: loop, node: name})
	return nil
}

// AttachVolume hot-plugs v: a block node appears in the instance's /dev
// (VolumeAttacher).
func (n *nsInstance) AttachVolume(ctx context.Context, v Volume) error { return n.attachDisk(ctx, v) }

// DetachVolume removes v's node from the instance's /dev and frees its loop device.
// A filesystem the instance still has mounted from it keeps the loop device busy
// (it is released, autoclear, at that unmount).
func (n *nsInstance) DetachVolume(ctx context.Context, v Volume) error {
	n.diskMu.Lock()
	defer n.diskMu.Unlock()
	for i, d := range n.disks {
		if d.vol.Path != v.Path {
			continue
		}
		n.disks = append(n.disks[:i], n.disks[i+1:]...)
		return n.dropDisk(d)
	}
	return fmt.Errorf("%s is not attached to this instance", v.VolumeID)
}

func (n *nsInstance) dropDisk(d nsDisk) error {
	var errs []error
	if dev, err := instanceDevDir(n.inst.NetNS()); err == nil {
		if err := os.Remove(filepath.Join(dev, d.node)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if out, err := exec.Command("losetup", "-d", d.loop).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("losetup -d %s (%s): %v: %s", d.loop, d.vol.DeviceName, err, out))
	}
	return errors.Join(errs...)
}

// dropDisks frees every loop device of the instance's volumes (at termination, once
// nothing in the instance can hold them).
func (n *nsInstance) dropDisks() error {
	n.diskMu.Lock()
	defer n.diskMu.Unlock()
	var errs []error
	for _, d := range n.disks {
		if out, err := exec.Command("losetup", "-d", d.loop).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("losetup -d %s (%s): %v: %s", d.loop, d.vol.DeviceName, err, out))
		}
	}
	n.disks = nil
	return errors.Join(errs...)
}
