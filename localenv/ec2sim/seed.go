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
	}
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, im := range st.regionImages(s.cfg.Region) {
		if im.owner == amazonOwnerID && im.name == si.Name {
			return "", fmt.Errorf("ec2sim: seed image name %s is already in use by %s", si.Name, im.id)
		}
	}
	im := &image{id: newID("ami"), name: si.Name, description: si.Description, region: s.cfg.Region,
		location: "amazon/" + si.Name, owner: amazonOwnerID, ownerAlias: "amazon", state: "available",
		arch: si.Architecture, virt: si.VirtualizationType, rootDeviceType: "instance-store", rootDeviceName: "/dev/sda1",
		public: true, created: time.Now().UTC(), root: si.Root, seq: st.next(), kernelID: si.KernelID, ramdiskID: si.RamdiskID,
		blockDevices: []blockDevice{{DeviceName: "/dev/sdb", VirtualName: "ephemeral0"}}}
	st.images[im.id] = im
	return im.id, nil
}
