//go:build linux

package instancestore

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestAcceptanceVMBuildEBSSource runs `packer build` of testdata/vm-ebs on real
// machines (the VM launcher): the path most users take today, from an EBS-backed
// distribution AMI to an instance store-backed one. The source is the seeded
// EBS-backed Debian cloud image (INSTANCESTORE_SOURCE_AMI_EBS: GPT, root p1, BIOS boot
// p14, ESP p15, label cloudimg-rootfs, cloud-init) on m5d.large, a Nitro type: it
// boots from its NVMe root volume (/dev/nvme0n1p1) and has an unformatted NVMe
// instance store disk, which the agent formats, mounts as its scratch, images / into
// and unmounts afterwards (all read from packer's output). The AMI registers as
// instance store-backed hvm; a new instance of it on m3.medium boots as the Xen
// instance store types do, with BIOS and the image's own GRUB (root /dev/vda1 on the
// launcher's virtio disk, as /dev/xvda1 on EC2), and over SSH with a key pair of its
// own the test finds the provisioned file, the image's kernel and ephemeral0 at /mnt.
// The template's ebs_copy block makes an EBS-backed AMI of the same image as well (a
// volume hot-plugged into the m5d.large as NVMe, written by the agent from the
// uploaded bundle, snapshotted, registered legacy-bios with ENA): an instance of it on
// t3.micro boots from its NVMe root (/dev/nvme0n1p1) and has the same file and kernel.
// Nothing is left: no instance, volume, snapshot, key pair, security group, object or
// AMI once the AMI is deregistered.
//
// The first run (load 15-35, the seeds built first): environment up in 7 minutes,
// packer build 27m27s (5m40s to SSH, the copy of 544 MiB of files 11m30s, bundle and
// upload 8 minutes), the new instance answered after 7m22s: 45 minutes in all (run
// it with -timeout 90m). The build gets 45 minutes. With the ebs_copy, at load 2-12:
// 1244 s in all, the packer build 17 minutes (the copy written onto the NVMe volume
// from the bundle, 223 MiB of parts, in about 1.5 minutes), the m3.medium instance
// answered after about 2 minutes and the t3.micro one of the EBS copy after 1m39s.
//
// The manifest may name more AMIs than the instance store one (an EBS copy): each
// AMI the build made is sorted by its root device type, and the EBS-backed ones
// (wantEBS of them) are checked and removed like the instance store one.
func TestAcceptanceVMBuildEBSSource(t *testing.T) {
	a := startVMEnv(t)
	ctx := context.Background()
	source := a.vars["INSTANCESTORE_SOURCE_AMI_EBS"]
	if source == "" {
		t.Fatal("the VM environment sets no INSTANCESTORE_SOURCE_AMI_EBS")
	}
	const (
		bucket  = "acc-vm-ebs"
		wantEBS = 1 // EBS-backed AMIs the template makes besides the instance store one: its ebs_copy
	)
	sourceSnaps := a.amiSnapshots(t, source)

	out, outDir := a.vmPackerBuild(t, "vm-ebs", 45*time.Minute, "-var", "s3_bucket="+bucket, "-var", "source_ami="+source)

	var isAMI string
	var ebsAMIs []string
	for _, id := range vmManifestAMIs(t, outDir) {
		imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		if err != nil || len(imgs.Images) != 1 {
			t.Fatalf("DescribeImages %s: %v", id, err)
		}
		switch imgs.Images[0].RootDeviceType {
		case ec2types.DeviceTypeInstanceStore:
			if isAMI != "" {
				t.Fatalf("the manifest names two instance store-backed AMIs, %s and %s", isAMI, id)
			}
			isAMI = id
		default:
			ebsAMIs = append(ebsAMIs, id)
		}
	}
	if isAMI == "" || len(ebsAMIs) != wantEBS {
		t.Fatalf("the manifest names instance store-backed AMI %q and EBS-backed AMIs %v; want one and %d", isAMI, ebsAMIs, wantEBS)
	}
	img := a.instanceStoreAMI(t, isAMI, "hvm")
	location := aws.ToString(img.ImageLocation)

	// The source on its Nitro type: NVMe root, and the NVMe instance store disk
	// (serial AWS..., EBS volumes have vol...).
	srcKernel := provisionerSaid(t, out, "source kernel")
	if got := provisionerSaid(t, out, "source root"); got != "/dev/nvme0n1p1" {
		t.Errorf("the source instance's root is on %q, want /dev/nvme0n1p1 (the EBS root volume on NVMe)", got)
	}
	disks := provisionerSaid(t, out, "source disks") // lsblk's order: by name or by probe
	if !regexp.MustCompile(`(^| )nvme0n1 vol[0-9a-f]{17}( |$)`).MatchString(disks) || !regexp.MustCompile(`(^| )nvme1n1 AWS[0-9A-F]{17}( |$)`).MatchString(disks) {
		t.Errorf("the source instance's disks are %q; want nvme0n1 (the EBS root, serial vol...) and nvme1n1 (the NVMe instance store, serial AWS...)", disks)
	}

	// The agent's scratch: the NVMe instance store disk, formatted and mounted for the
	// run; / is imaged into it; the disk is unmounted after the bundle is uploaded.
	m := regexp.MustCompile(`agent: scratch: the NVMe instance store disk (/dev/nvme[0-9]+n1) \([0-9]+ MiB\), formatted and mounted on (/run/instancestore-bundler/[0-9]+\.scratch) for this run`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the agent did not format and mount the NVMe instance store disk as its scratch (no \"agent: scratch: the NVMe instance store disk ... formatted and mounted on ...\" line in packer's output)")
	}
	dev, mnt := m[1], m[2]
	imaging := regexp.MustCompile(`agent: imaging / \(ext4, label "cloudimg-rootfs", [^)]*\) into ` + regexp.QuoteMeta(mnt) + `/instancestore-run-`).FindStringIndex(out)
	if imaging == nil {
		t.Errorf("the agent did not image / (ext4, label cloudimg-rootfs) into a run directory on the scratch disk at %s", mnt)
	}
	if !strings.Contains(out, "agent: keeping the EFI system partition (partition 15) in the image") {
		t.Errorf("the agent did not say it kept the EFI system partition (15) in the image")
	}
	unmounted := strings.Index(out, "agent: scratch: the NVMe instance store disk "+dev+" unmounted from "+mnt+" and wiped")
	if unmounted < 0 {
		t.Errorf("the agent did not say it unmounted the scratch disk %s from %s", dev, mnt)
	} else if imaging != nil && unmounted < imaging[0] {
		t.Errorf("the agent unmounted the scratch disk before imaging into it")
	}
	if strings.Contains(out, "swept what a dead agent run left") {
		t.Errorf("the agent found a dead run to sweep on a fresh instance")
	}

	// An instance of the new AMI on an instance store type.
	a.vmBootAMI(t, isAMI, "m3.medium", source, srcKernel, "/dev/vda1", "/dev/vdb ext3")

	// The ebs_copy: the same image on an EBS root volume, for the Nitro types. It boots
	// there as the source did, from NVMe, with BIOS (the image's own GRUB) and no
	// instance store on t3.micro.
	copySnaps := map[string]bool{}
	for _, id := range ebsAMIs {
		imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		if err != nil || len(imgs.Images) != 1 {
			t.Fatalf("DescribeImages %s: %v", id, err)
		}
		im := imgs.Images[0]
		if im.RootDeviceType != ec2types.DeviceTypeEbs || im.VirtualizationType != ec2types.VirtualizationTypeHvm ||
			im.BootMode != ec2types.BootModeValuesLegacyBios || !aws.ToBool(im.EnaSupport) || aws.ToString(im.RootDeviceName) != "/dev/xvda" {
			t.Errorf("the ebs_copy AMI %s: root %s at %s, %s, boot mode %q, ENA %v; want ebs at /dev/xvda, hvm, legacy-bios, ENA",
				id, im.RootDeviceType, aws.ToString(im.RootDeviceName), im.VirtualizationType, im.BootMode, aws.ToBool(im.EnaSupport))
		}
		for snap := range a.amiSnapshots(t, id) {
			copySnaps[snap] = true
		}
		a.vmBootAMI(t, id, "t3.micro", source, srcKernel, "/dev/nvme0n1p1", "")
	}

	// The EBS copies go first (checkLeftovers allows only the instance store AMI):
	// their AMIs, then their snapshots; no other volume or snapshot may remain.
	for _, id := range ebsAMIs {
		if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	for s := range copySnaps {
		if _, err := a.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s)}); err != nil {
			t.Fatal(err)
		}
	}
	a.checkLeftovers(t, bucket, location)
	a.checkNoEBSLeftovers(t, sourceSnaps)
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(isAMI)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
	a.checkLeftovers(t, bucket, "")
	a.checkNoEBSLeftovers(t, sourceSnaps)
}

// amiSnapshots is the set of EBS snapshots an AMI's block device mapping names.
func (a *accEnv) amiSnapshots(t *testing.T, amiID string) map[string]bool {
	t.Helper()
	imgs, err := a.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{amiID}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("DescribeImages %s: %v", amiID, err)
	}
	snaps := map[string]bool{}
	for _, bdm := range imgs.Images[0].BlockDeviceMappings {
		if bdm.Ebs != nil && bdm.Ebs.SnapshotId != nil {
			snaps[*bdm.Ebs.SnapshotId] = true
		}
	}
	return snaps
}

// checkNoEBSLeftovers fails when a volume is left (the source instance's root is
// deleted with it, DeleteOnTermination) or a snapshot besides keep, the ones of AMIs
// the test did not make.
func (a *accEnv) checkNoEBSLeftovers(t *testing.T, keep map[string]bool) {
	t.Helper()
	ctx := context.Background()
	var problems []string
	// A terminated instance's volumes go with it; give the simulator a moment.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		vols, err := a.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, v := range vols.Volumes {
			if v.State != ec2types.VolumeStateDeleted {
				left = append(left, aws.ToString(v.VolumeId)+" "+string(v.State))
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			problems = append(problems, "volumes left: "+strings.Join(left, ", "))
			break
		}
		time.Sleep(time.Second)
	}
	snaps, err := a.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps.Snapshots {
		if !keep[aws.ToString(s.SnapshotId)] {
			problems = append(problems, "snapshot left: "+aws.ToString(s.SnapshotId))
		}
	}
	if len(problems) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(problems, "\n  "))
	}
}
