package ec2sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/instancestore/packer-plugin-instancestore/internal/clouddisk"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	nsinstance "github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

// cloudDisk makes a raw disk shaped like today's official cloud images: GPT, a BIOS
// boot partition (14), an EFI system partition (15) and the root (1, ext4 labelled
// cloudimg-rootfs) holding the lite root and a marker file.
func cloudDisk(t *testing.T, marker string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "cloud.raw")
	if err := clouddisk.Make(ctxT(t), liteRoot(t), img, 2<<30); err != nil {
		t.Fatal(err)
	}
	dir, unmount, err := nsinstance.MountImage(img)
	if err != nil {
		t.Fatal(err)
	}
	werr := os.WriteFile(filepath.Join(dir, "etc", "ebs-marker"), []byte(marker), 0o644)
	if err := unmount(); err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	return img
}

// TestEBSNamespaceInstance boots an EBS-backed AMI seeded from a cloud-image-shaped
// disk on the namespace launcher: the root comes from the snapshot, volumes are block
// devices in the instance (at launch and hot-plugged), and a file written to the root
// survives StopInstances/StartInstances.
func TestEBSNamespaceInstance(t *testing.T) {
	testroot.Require(t)
	e := startRunningServer(t, Config{PendingTime: -1})
	ctx := ctxT(t)
	start := time.Now()
	img := cloudDisk(t, "from the snapshot")
	t.Logf("cloud disk built in %s", time.Since(start).Round(time.Millisecond))
	ami, err := e.srv.Seed(SeedImage{Name: "debian-12-amd64-cloud", EBS: true, Root: RootSource{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := e.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	key := aws.ToString(kp.KeyMaterial)
	out, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: aws.String("k"),
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/sdf", "", 1, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	start = time.Now()
	in := waitState(t, e.ec2, id, types.InstanceStateNameRunning)
	t.Logf("EBS-backed instance running after %s", time.Since(start).Round(time.Millisecond))
	ip := aws.ToString(in.PrivateIpAddress)
	if got := sshRun(t, ip, "root", key, "cat /etc/ebs-marker; test -b /dev/nvme1n1 && echo ' disk'"); got != "from the snapshot disk\n" {
		t.Fatalf("instance answered %q", got)
	}
	sshRun(t, ip, "admin", key, "echo kept | sudo tee /root/kept >/dev/null && sync")

	// Hot-plug: a new volume is a block device of the running instance; what the
	// instance writes to it is in the volume's file.
	cv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: in.Placement.AvailabilityZone, Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	hot := aws.ToString(cv.VolumeId)
	waitVolume(t, e, hot, false)
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(hot), InstanceId: aws.String(id), Device: aws.String("/dev/sdg")}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, e, hot, true)
	sshRun(t, ip, "root", key, "printf hot-plugged | dd of=/dev/nvme2n1 conv=fsync 2>/dev/null")
	e.srv.st.mu.Lock()
	hotPath := e.srv.ebs().volumes[hot].path
	e.srv.st.mu.Unlock()
	if got := readAt(t, hotPath, 11, 0); got != "hot-plugged" {
		t.Fatalf("the hot-plugged volume's file reads %q", got)
	}
	if _, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(hot)}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, e, hot, false)
	sshRun(t, ip, "root", key, "test ! -e /dev/nvme2n1")

	// Stop and start: the machine goes and comes back on the same root volume.
	if _, err := e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitState(t, e.ec2, id, types.InstanceStateNameStopped)
	t.Logf("stopped after %s", time.Since(start).Round(time.Millisecond))
	if l := leftovers(t, e.srv); len(l) > 0 {
		t.Fatalf("left behind by the stop:\n%s", strings.Join(l, "\n"))
	}
	if _, err := e.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	in = waitState(t, e.ec2, id, types.InstanceStateNameRunning)
	t.Logf("started again after %s", time.Since(start).Round(time.Millisecond))
	if ip2 := aws.ToString(in.PrivateIpAddress); ip2 != ip {
		t.Logf("private IP changed across stop/start: %s -> %s (the old /30 was taken meanwhile)", ip, ip2)
		ip = ip2
	}
	if got := sshRun(t, ip, "root", key, "cat /root/kept /etc/ebs-marker; test -b /dev/nvme1n1 && echo ' disk'"); got != "kept\nfrom the snapshot disk\n" {
		t.Fatalf("after stop/start the instance answered %q", got)
	}
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, e.ec2, id, types.InstanceStateNameTerminated)
	if l := leftovers(t, e.srv); len(l) > 0 {
		t.Fatalf("left behind by the termination:\n%s", strings.Join(l, "\n"))
	}
	dv, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil || len(dv.Volumes) != 1 || aws.ToString(dv.Volumes[0].VolumeId) != hot {
		t.Fatalf("volumes after termination (only the detached one should stay): %+v %v", dv, err)
	}
}
