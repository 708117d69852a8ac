package ec2sim

import (
	"fmt"
	"os"
	"time"
)

// SeedImage describes a base AMI the simulator offers from the start, owned by
// "amazon" and public, like the AMIs a template's source_ami_filter finds.
type SeedImage struct {
	Name         string // e.g. "instancestore-lite-x86_64"
	Description  string
	Architecture string // default x86_64
	// VirtualizationType, default "paravirtual" (runs on m1/m3/c3; use hvm for r3/i2...)
	VirtualizationType string
	Root               RootSource

	// EBS seeds an EBS-backed AMI instead, shaped like today's official cloud images:
	// Root.Image (a raw disk image: a GPT disk with the root at partition 1, a BIOS
	// boot and an EFI system partition) becomes a public snapshot owned by amazon,
	// the AMI's root at RootDeviceName (default /dev/xvda), hvm, ENA and
	// sriovNetSupport on, BootMode (default uefi-preferred), a VolumeSize GiB root
	// (default: the image's size rounded up to GiB, at least 8, as distributions
	// publish) of VolumeType (default gp3). The image file is copied (reflink where
	// the file system can), so the caller may remove it afterwards.
	EBS            bool
	RootDeviceName string
	BootMode       string
	VolumeSize     int
	VolumeType     string

	// KernelID and RamdiskID are a paravirtual AMI's kernel and ramdisk (a PV-GRUB
	// aki- boots the kernel the image's menu.lst names).
	KernelID, RamdiskID string
}

// Seed adds a base instance-store AMI in the home region and returns its id.
func (s *Server) Seed(si SeedImage) (string, error) {
	if si.Name == "" {
		return "", fmt.Errorf("ec2sim: seed image needs a name")
	}
	if si.Root.Dir == "" && si.Root.Image == "" {
		return "", fmt.Errorf("ec2sim: seed image %s needs Root.Dir or Root.Image", si.Name)
	}
	for _, p := range []string{si.Root.Dir, si.Root.Image} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("ec2sim: seed image %s: %w", si.Name, err)
		}
	}
	if si.VirtualizationType == "hvm" && (si.KernelID != "" || si.RamdiskID != "") {
		return "", fmt.Errorf("ec2sim: seed image %s: kernel and ramdisk ids are for paravirtual images only", si.Name)
	}
	if si.Architecture == "" {
		si.Architecture = "x86_64"
	}
	if si.VirtualizationType == "" {
		si.VirtualizationType = "paravirtual"
		if si.EBS {
			si.VirtualizationType = "hvm" // what EBS-backed cloud images are
		}
	}
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, im := range st.regionImages(s.cfg.Region) {
		if im.owner == amazonOwnerID && im.name == si.Name {
			return "", fmt.Errorf("ec2sim: seed image name %s is already in use by %s", si.Name, im.id)
		}
	}
	if si.EBS {
		return s.seedEBS(si)
	}
	im := &image{id: newID("ami"), name: si.Name, description: si.Description, region: s.cfg.Region,
		location: "amazon/" + si.Name, owner: amazonOwnerID, ownerAlias: "amazon", state: "available",
		arch: si.Architecture, virt: si.VirtualizationType, rootDeviceType: "instance-store", rootDeviceName: "/dev/sda1",
		public: true, created: time.Now().UTC(), root: si.Root, seq: st.next(), kernelID: si.KernelID, ramdiskID: si.RamdiskID,
		blockDevices: []blockDevice{{DeviceName: "/dev/sdb", VirtualName: "ephemeral0"}}}
	st.images[im.id] = im
	return im.id, nil
}
