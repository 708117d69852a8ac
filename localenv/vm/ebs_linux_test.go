package vm_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

// TestEBSInstanceOnNitro runs the seeded EBS-backed cloud AMI on m5d.large through
// the simulator's API on the VM launcher and checks, from inside the guest, what EC2
// shows on a Nitro "d" type: the root volume is /dev/nvme0n1 (booted by SeaBIOS from
// NVMe, the root file system on nvme0n1p1) whose NVMe serial is the root volume's id
// without its dash; the instance store is an unformatted NVMe disk whose serial
// starts with AWS; a volume attached while it runs is hot-plugged as the next NVMe
// controller (nvme2n1, after the instance store), and what the guest writes to it is
// in the volume's file once it is detached. Then a file written to the root survives
// StopInstances/StartInstances, and TerminateInstances deletes the root volume
// (DeleteOnTermination) and leaves no qemu, namespace or instance directory.
func TestEBSInstanceOnNitro(t *testing.T) {
	testroot.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	img, err := localenv.SeedImage(ctx, localenv.SeedEBSCloud, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	dataDir := filepath.Join(work, "ec2")
	launcher := &vm.VMLauncher{WorkDir: filepath.Join(work, "instances"), Logf: t.Logf, ProbeKernel: probeKernel(t)}
	srv, err := ec2sim.Start(ec2sim.Config{Credentials: creds, DataDir: dataDir, Launcher: launcher, LaunchTimeout: localenv.VMLaunchTimeout, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ami, err := srv.Seed(ec2sim.SeedImage{Name: localenv.DebianEBSAMIName, VirtualizationType: "hvm", EBS: true, Root: ec2sim.RootSource{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	c := ec2.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, ""), RetryMaxAttempts: 1},
		func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.URL()) })
	kp, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("vm-ebs")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: "m5d.large", MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		KeyName: aws.String("vm-ebs")})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	terminated := false
	defer func() {
		if !terminated {
			c.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		}
	}()
	in := waitState(t, c, id, types.InstanceStateNameRunning)
	t.Logf("boot to SSH (EBS-backed hvm from NVMe, TCG, m5d.large): %s", time.Since(start).Round(100*time.Millisecond))
	console := func() string {
		cons, err := c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
		if err != nil {
			return err.Error()
		}
		text, _ := base64.StdEncoding.DecodeString(aws.ToString(cons.Output))
		return tailText(string(text), 40)
	}
	var rootVol string
	for _, m := range in.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == aws.ToString(in.RootDeviceName) && m.Ebs != nil {
			rootVol = aws.ToString(m.Ebs.VolumeId)
		}
	}
	if rootVol == "" {
		t.Fatalf("DescribeInstances names no root volume at %s: %+v", aws.ToString(in.RootDeviceName), in.BlockDeviceMappings)
	}
	ip := aws.ToString(in.PrivateIpAddress)
	cl, err := dialSSH(ip, "admin", aws.ToString(kp.KeyMaterial))
	if err != nil {
		t.Fatalf("%v; console:\n%s", err, console())
	}

	if got := strings.TrimSpace(run(t, cl, "findmnt -n -o SOURCE /")); got != "/dev/nvme0n1p1" {
		t.Errorf("guest root on %q, want /dev/nvme0n1p1", got)
	}
	serial := func(dev string) string {
		return strings.TrimSpace(run(t, cl, "cat /sys/block/"+dev+"/device/serial"))
	}
	if got, want := serial("nvme0n1"), strings.Replace(rootVol, "-", "", 1); got != want {
		t.Errorf("nvme0n1's serial %q, want the root volume's id without its dash %q", got, want)
	}
	// The instance store: nvme1n1, 75 GB, serial AWS..., no file system on it.
	if got := serial("nvme1n1"); !strings.HasPrefix(got, "AWS") || len(got) != 20 {
		t.Errorf("nvme1n1's serial %q, want the instance store's AWS + 17 hex digits", got)
	}
	if got := strings.TrimSpace(run(t, cl, "lsblk -b -n -d -o SIZE /dev/nvme1n1")); got != "80530636800" {
		t.Errorf("instance store nvme1n1 size %s, want 75 GiB (80530636800)", got)
	}
	if got, err := runErr(cl, "sudo blkid -p /dev/nvme1n1; echo rc=$?"); !strings.HasSuffix(strings.TrimSpace(got), "rc=2") {
		t.Errorf("instance store nvme1n1: blkid -p says %q (%v), want nothing found (unformatted, rc 2)", got, err)
	}

	// Hot-plug: a new volume, attached while the instance runs.
	cv, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: in.Placement.AvailabilityZone, Size: aws.Int32(1), VolumeType: types.VolumeTypeGp3})
	if err != nil {
		t.Fatal(err)
	}
	vol := aws.ToString(cv.VolumeId)
	waitVolume(t, c, vol, types.VolumeStateAvailable)
	attachStart := time.Now()
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(id), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, c, vol, types.VolumeStateInUse)
	volSerial := strings.Replace(vol, "-", "", 1)
	var dev string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		got, _ := runErr(cl, `for d in /sys/block/nvme*n1; do echo "$(basename $d) $(cat $d/device/serial)"; done`)
		for _, l := range strings.Split(got, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[1] == volSerial {
				dev = f[0]
			}
		}
		if dev != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the attached %s never appeared in the guest (NVMe serials: %q); console:\n%s", vol, got, console())
		}
	}
	t.Logf("AttachVolume to the guest's /dev/%s: %s", dev, time.Since(attachStart).Round(100*time.Millisecond))
	if dev != "nvme2n1" {
		t.Errorf("the attached volume is %s in the guest, want nvme2n1 (after the root and the instance store)", dev)
	}
	const marker = "written in the guest to a hot-plugged EBS volume\n"
	run(t, cl, "printf '"+strings.TrimSuffix(marker, "\n")+"\\n' | sudo dd of=/dev/"+dev+" bs=4096 conv=sync,fsync status=none")
	detachStart := time.Now()
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, c, vol, types.VolumeStateAvailable)
	t.Logf("DetachVolume until available: %s", time.Since(detachStart).Round(100*time.Millisecond))
	if got := strings.TrimSpace(run(t, cl, "ls /sys/block | grep nvme | tr '\\n' ' '")); got != "nvme0n1 nvme1n1" {
		t.Errorf("guest NVMe disks after the detach: %q, want nvme0n1 nvme1n1", got)
	}
	data := readPrefix(t, volumeFile(t, dataDir, vol), len(marker))
	if data != marker {
		t.Errorf("the detached volume's file starts with %q, want what the guest wrote: %q", data, marker)
	}
	if _, err := c.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}

	// Stop and start: the root volume keeps what the guest wrote.
	run(t, cl, "echo kept across stop and start | sudo tee /var/tmp/ebs-persist >/dev/null && sync")
	cl.Close()
	stopStart := time.Now()
	if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, id, types.InstanceStateNameStopped)
	t.Logf("StopInstances until stopped (ACPI power-off): %s", time.Since(stopStart).Round(100*time.Millisecond))
	start = time.Now()
	if _, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	in = waitState(t, c, id, types.InstanceStateNameRunning)
	t.Logf("StartInstances to SSH (TCG, m5d.large): %s", time.Since(start).Round(100*time.Millisecond))
	if got := aws.ToString(in.PrivateIpAddress); got != ip {
		t.Errorf("private IP after stop and start %s, want the one it had: %s", got, ip)
	}
	cl, err = dialSSH(aws.ToString(in.PrivateIpAddress), "admin", aws.ToString(kp.KeyMaterial))
	if err != nil {
		t.Fatalf("after StartInstances: %v; console:\n%s", err, console())
	}
	if got := strings.TrimSpace(run(t, cl, "cat /var/tmp/ebs-persist")); got != "kept across stop and start" {
		t.Errorf("the root's file after stop and start: %q", got)
	}
	if got := serial("nvme0n1"); got != strings.Replace(rootVol, "-", "", 1) {
		t.Errorf("after start, nvme0n1's serial is %q, want the same root volume %s", got, rootVol)
	}
	cl.Close()

	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	terminated = true
	waitState(t, c, id, types.InstanceStateNameTerminated)
	_, err = c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{rootVol}})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidVolume.NotFound" {
		t.Errorf("DescribeVolumes of the terminated instance's root %s: %v, want InvalidVolume.NotFound (DeleteOnTermination)", rootVol, err)
	}
	if p := findFile(dataDir, rootVol+".img"); p != "" {
		t.Errorf("the root volume's file %s is still there after termination", p)
	}
	waitGone(t, launcher)
}

func waitVolume(t *testing.T, c *ec2.Client, id string, want types.VolumeState) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := c.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if out.Volumes[0].State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s still %s, want %s", id, out.Volumes[0].State, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// volumeFile is the simulator's backing file of a volume under its data directory.
func volumeFile(t *testing.T, dataDir, vol string) string {
	t.Helper()
	p := findFile(dataDir, vol+".img")
	if p == "" {
		t.Fatalf("no backing file %s.img under %s", vol, dataDir)
	}
	return p
}

func findFile(dir, name string) string {
	var found string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

func readPrefix(t *testing.T, p string, n int) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	k, _ := f.Read(b)
	return string(b[:k])
}

func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
