package ec2sim

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// seedEBS makes si.Root.Image a public amazon-owned snapshot and registers an
// EBS-backed AMI on it (SeedImage.EBS). Caller holds mu.
func (s *Server) seedEBS(si SeedImage) (string, error) {
	if si.Root.Image == "" {
		return "", fmt.Errorf("ec2sim: EBS seed image %s needs Root.Image (a raw disk image), not a directory", si.Name)
	}
	if si.VirtualizationType != "hvm" && si.VirtualizationType != "paravirtual" {
		return "", fmt.Errorf("ec2sim: seed image %s: VirtualizationType %q is not hvm or paravirtual", si.Name, si.VirtualizationType)
	}
	if si.RootDeviceName == "" {
		si.RootDeviceName = "/dev/xvda"
	}
	if !validDeviceName(si.RootDeviceName) {
		return "", fmt.Errorf("ec2sim: seed image %s: RootDeviceName %s is not a device name EC2 takes", si.Name, si.RootDeviceName)
	}
	if si.BootMode == "" {
		si.BootMode = "uefi-preferred"
	}
	switch si.BootMode {
	case "legacy-bios", "uefi", "uefi-preferred":
	default:
		return "", fmt.Errorf("ec2sim: seed image %s: BootMode %q is not legacy-bios, uefi or uefi-preferred", si.Name, si.BootMode)
	}
	if si.VolumeType == "" {
		si.VolumeType = "gp3"
	}
	fi, err := os.Stat(si.Root.Image)
	if err != nil {
		return "", fmt.Errorf("ec2sim: seed image %s: %w", si.Name, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return "", fmt.Errorf("ec2sim: seed image %s: %s is not a disk image file", si.Name, si.Root.Image)
	}
	snapGiB := int((fi.Size() + 1<<30 - 1) >> 30)
	if si.VolumeSize == 0 {
		si.VolumeSize = max(8, snapGiB)
	}
	if si.VolumeSize < snapGiB {
		return "", fmt.Errorf("ec2sim: seed image %s: VolumeSize %d GiB is smaller than the image (%d GiB)", si.Name, si.VolumeSize, snapGiB)
	}
	iops, tput := 0, 0
	if si.VolumeType == "gp3" {
		iops, tput = 3000, 125
	}
	if err := checkVolumeSpec(si.VolumeType, si.VolumeSize, iops, tput); err != nil {
		return "", fmt.Errorf("ec2sim: seed image %s: %v", si.Name, err)
	}
	e := s.ebs()
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return "", fmt.Errorf("ec2sim: creating EBS dir: %w", err)
	}
	sn := &snapshot{id: newID("snap"), region: s.cfg.Region, volumeID: "vol-ffffffff", description: "root of " + si.Name,
		state: "completed", progress: 100, owner: amazonOwnerID, public: true, size: snapGiB, started: time.Now().UTC(), seq: s.st.next()}
	sn.path = filepath.Join(e.dir, sn.id+".img")
	// The snapshot is the image grown to whole GiB, as a volume of it reads.
	if err := copySparse(si.Root.Image, sn.path, snapGiB); err != nil {
		return "", fmt.Errorf("ec2sim: seed image %s: %w", si.Name, err)
	}
	e.snapshots[sn.id] = sn
	sp := &ebsSpec{snapshotID: sn.id, size: si.VolumeSize, volType: si.VolumeType, deleteOnTerm: true, deleteOnTermSet: true}
	im := &image{id: newID("ami"), name: si.Name, description: si.Description, region: s.cfg.Region,
		location: "amazon/" + si.Name, owner: amazonOwnerID, ownerAlias: "amazon", state: "available",
		arch: si.Architecture, virt: si.VirtualizationType, rootDeviceType: "ebs", rootDeviceName: si.RootDeviceName,
		enaSupport: si.VirtualizationType == "hvm", bootMode: si.BootMode, imdsSupport: "",
		public: true, created: time.Now().UTC(), seq: s.st.next(),
		blockDevices: []blockDevice{{DeviceName: si.RootDeviceName, EBS: true, VolumeSize: si.VolumeSize, Ebs: sp}}}
	if im.virt == "hvm" {
		im.sriov = "simple"
	}
	s.st.images[im.id] = im
	return im.id, nil
}
