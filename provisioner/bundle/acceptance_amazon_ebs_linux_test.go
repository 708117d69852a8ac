package bundle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	format "github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/clouddisk"
	"github.com/instancestore/packer-plugin-instancestore/internal/launch"
	"github.com/instancestore/packer-plugin-instancestore/internal/packertest"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// TestAcceptanceAmazonEBS runs the real `packer build` of testdata/amazon-ebs on real
// machines: the local environment with Machines "vm", where every instance is a qemu
// guest that boots its AMI as EC2 does. HashiCorp's amazon-ebs builder
// (packer-plugin-amazon v1.8.2, pinned in tools/amazon) launches the seeded EBS-backed
// Debian 12 cloud AMI (localenv.DebianEBSAMIName: GPT with BIOS boot and EFI system
// partitions, cloud-init, user admin) on t3.micro: a Nitro type, root /dev/nvme0n1 on
// an 8 GiB volume, no instance store. A shell provisioner writes a file and
// instancestore-bundle bundles the live root and registers an instance store-backed
// AMI; the agent's scratch is /tmp on the root itself (its default when the instance
// has no instance store: excluded from the copy). amazon-ebs then stops the instance
// and makes its own EBS-backed AMI. A new instance of each boots (the instance store
// AMI on m3.medium, a Xen HVM type: root /dev/vda1; amazon-ebs's on t3.micro) with a
// key pair of its own, and over SSH the test finds the file, the root device, and
// amazon-ebs's temporary key only in amazon-ebs's AMI. Nothing of the build is left
// in EC2 but the two AMIs and the EBS AMI's snapshot.
//
// The interrupted build is TestAcceptanceAmazonEBSInterrupted, on the namespace
// machines: what it checks (amazon-ebs's and the provisioner's cleanup through the
// EC2 and S3 APIs) is the same on both launchers, and on a VM it would add another
// boot of the source to CI (1-7 minutes under TCG) for no other check.
func TestAcceptanceAmazonEBS(t *testing.T) {
	testStart := time.Now()
	a := startAmazonEBS(t, "vm")
	ctx := a.ctx
	sourceAMI := a.vars["INSTANCESTORE_SOURCE_AMI_EBS"]
	if sourceAMI == "" {
		t.Fatalf("the VM environment sets no INSTANCESTORE_SOURCE_AMI_EBS (the seeded %s)", localenv.DebianEBSAMIName)
	}
	bucket := "amazon-ebs-vm-bundles"
	name := "amazon-ebs-vm"
	// Whatever the checks find, what the build made goes again.
	t.Cleanup(func() { deleteBuilt(t, a.ec2, a.s3, bucket) })

	if out, err := runPacker(ctx, t, a.packer, a.tplDir, a.env, "validate", "-var", "source_ami="+sourceAMI, "-var", "s3_bucket="+bucket, "."); err != nil {
		t.Fatalf("packer validate: %v\n%s", err, out)
	}
	logFile := filepath.Join(a.dir, "packer.log")
	start := time.Now()
	out, err, _ := packerBuild(ctx, t, a.packer, a.tplDir, append(a.env, "PACKER_LOG=1", "PACKER_LOG_PATH="+logFile), "",
		"-var", "source_ami="+sourceAMI, "-var", "s3_bucket="+bucket, "-var", "ami_name="+name)
	buildTime := time.Since(start)
	if err != nil {
		logText, _ := os.ReadFile(logFile)
		t.Fatalf("packer build: %v\n%s\n--- end of packer.log ---\n%s", err, out, tail(string(logText), 20000))
	}
	t.Logf("packer build output:\n%s", out)
	t.Logf("packer build (amazon-ebs on t3.micro + instancestore-bundle, VM) took %s", buildTime.Round(time.Second))

	// What the shell provisioner saw on the source: a Nitro instance, its root on
	// NVMe, no instance store disk.
	if got := provisionerSaid(t, out, "source root"); got != "/dev/nvme0n1p1" {
		t.Errorf("the t3.micro source's root is on %q, want /dev/nvme0n1p1", got)
	}
	if got := provisionerSaid(t, out, "source disks"); got != "nvme0n1" {
		t.Errorf("the t3.micro source has the disks %q, want only its root volume nvme0n1 (t3 has no instance store)", got)
	}
	if got := provisionerSaid(t, out, "source root volume GiB"); got != "8" {
		t.Errorf("the t3.micro source's root volume is %q GiB, want 8 (the AMI's VolumeSize)", got)
	}
	// With no instance store the agent's scratch is /tmp on the root filesystem.
	if !regexp.MustCompile(`agent: imaging / \(ext4, [^)]*\) into /tmp/instancestore-run-[^ ]*: \d+ MiB, gpt partition 1`).MatchString(out) {
		t.Errorf("the agent did not image / into a scratch directory under /tmp with the source's GPT kept (no \"agent: imaging / (ext4, ...) into /tmp/instancestore-run-...: N MiB, gpt partition 1\" line in packer's output)")
	}
	if !strings.Contains(out, "keeping the EFI system partition (partition 15) in the image") {
		t.Errorf("the output does not say that the EFI system partition (15) is kept in the image")
	}

	is, ebs := a.checkAMIs(t, out, name, bucket)
	// cloud-init wrote amazon-ebs's temporary key pair into ~admin/.ssh/authorized_keys
	// (the local metadata service names each key after its key pair, as EC2's does).
	if !strings.Contains(out, "temporary SSH key line(s) from /home/admin/.ssh/authorized_keys") {
		t.Errorf("the output does not show amazon-ebs's temporary SSH key removed from the image")
	}

	// A new instance of each: the file is there, the root is where the type puts it,
	// and ~admin/.ssh/authorized_keys holds the new key pair's key (cloud-init adds it
	// on the first boot) and amazon-ebs's temporary one only in amazon-ebs's own AMI
	// (ssh_clear_authorized_keys is off by default).
	want := "provisioned under amazon-ebs from " + sourceAMI
	for _, l := range []struct {
		ami, itype, root string
		tempKey          bool
	}{
		{aws.ToString(is.ImageId), "m3.medium", "/dev/vda1", false},
		{aws.ToString(ebs.ImageId), "t3.micro", "/dev/nvme0n1p1", true},
	} {
		start := time.Now()
		text, err := launch.Run(ctx, a.ec2, l.ami, l.itype, "admin",
			"cat /etc/instancestore/amazon-ebs.txt; echo \"root: $(findmnt -n -o SOURCE /)\"; echo \"keys: $(cut -d' ' -f3 .ssh/authorized_keys | sort | tr '\\n' ' ')\"", t.Logf)
		if err != nil {
			t.Fatalf("launching %s on %s: %v\n%s", l.ami, l.itype, err, text)
		}
		t.Logf("%s on %s: launched and read over SSH in %s:\n%s", l.ami, l.itype, time.Since(start).Round(time.Second), text)
		lines := strings.Split(text, "\n")
		if lines[0] != want {
			t.Errorf("%s on %s: the file reads %q, want %q", l.ami, l.itype, lines[0], want)
		}
		if got := said(text, "root"); got != l.root {
			t.Errorf("%s on %s: the root is on %q, want %s", l.ami, l.itype, got, l.root)
		}
		keys := strings.Fields(said(text, "keys"))
		var launchKeys, tempKeys int
		for _, k := range keys {
			switch {
			case strings.HasPrefix(k, "launch-"):
				launchKeys++
			case strings.HasPrefix(k, "packer_"):
				tempKeys++
			}
		}
		wantTemp := map[bool]int{false: 0, true: 1}[l.tempKey]
		if launchKeys != 1 || tempKeys != wantTemp || len(keys) != 1+wantTemp {
			t.Errorf("%s on %s: authorized_keys names the key pairs %q; want the new one (launch-...) and %d of amazon-ebs's (packer_...)", l.ami, l.itype, keys, wantTemp)
		}
	}
	a.checkLeftAfterBuild(t, ebs)
	t.Logf("the whole amazon-ebs VM test took %s (environment up, build %s, two launches)", time.Since(testStart).Round(time.Second), buildTime.Round(time.Second))
}

// TestAcceptanceAmazonEBSInterrupted runs testdata/amazon-ebs on the fast namespace
// machines, against an EBS-backed AMI of a cloud-image-shaped GPT disk made from the
// lite root (internal/clouddisk), and interrupts the build (SIGINT to packer's process
// group, as a terminal's Ctrl-C) while the provisioner bundles: amazon-ebs's cleanup
// and the provisioner's must leave nothing: no instance, volume, snapshot, key pair,
// security group, AMI or S3 object.
func TestAcceptanceAmazonEBSInterrupted(t *testing.T) {
	a := startAmazonEBS(t, "namespace")
	ctx := a.ctx
	sourceAMI := a.seedCloudDisk(t)
	bucket := "amazon-ebs-bundles"
	name := "amazon-ebs-acc"
	t.Cleanup(func() { deleteBuilt(t, a.ec2, a.s3, bucket) })

	before := bucketObjects(ctx, t, a.s3, bucket)
	start := time.Now()
	out, err, interrupted := packerBuild(ctx, t, a.packer, a.tplDir, a.env, "Bundling for account",
		"-var", "source_ami="+sourceAMI, "-var", "s3_bucket="+bucket, "-var", "ami_name="+name+"-cancelled")
	if !interrupted || err == nil {
		t.Fatalf("the build was not interrupted while bundling (interrupted %v, err %v):\n%s", interrupted, err, out)
	}
	t.Logf("interrupted build output (%s):\n%s", time.Since(start).Round(100*time.Millisecond), out)
	if got := a.images(t, name+"-cancelled-*"); len(got) > 0 {
		t.Errorf("the interrupted build left AMIs: %v", got)
	}
	if l := leftInEC2(ctx, t, a.ec2, nil); len(l) > 0 {
		t.Errorf("left behind by the interrupted build:\n%s", strings.Join(l, "\n"))
	}
	if after := bucketObjects(ctx, t, a.s3, bucket); len(after) != len(before) {
		t.Errorf("the interrupted build left objects in %s: %v (before: %v)", bucket, after, before)
	}
}

// amazonEBSAcc is a local environment with Packer, the test plugin and
// packer-plugin-amazon installed, for testdata/amazon-ebs.
type amazonEBSAcc struct {
	ctx    context.Context
	dir    string
	packer string
	env    []string
	vars   map[string]string
	le     *localenv.Env
	ec2    *ec2.Client
	s3     *s3.Client
	tplDir string
}

// startAmazonEBS skips unless acceptance tests run as root on linux/amd64, installs
// the plugins and starts the environment with the given machines and MinIO; the
// test's cleanup closes it and checks that no qemu guest of it still runs.
func startAmazonEBS(t *testing.T, machines string) *amazonEBSAcc {
	testroot.Acceptance(t)
	testroot.Require(t)
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the test plugin serves as the agent only on linux/amd64")
	}
	// Packer, the amazon plugin, MinIO and the VM base images may be built first; on
	// the VM machines three guests boot under TCG, which on a loaded host takes long
	// (see TestAcceptanceAmazonEBS).
	limit := 60 * time.Minute
	if machines == "vm" {
		limit = 100 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	a := &amazonEBSAcc{ctx: ctx, dir: t.TempDir(), vars: map[string]string{}}
	a.packer, a.env = installPlugin(t, a.dir)
	installAmazonPlugin(t, a.packer, a.env)

	start := time.Now()
	envDir := filepath.Join(a.dir, "localenv")
	le, err := localenv.Start(ctx, localenv.Options{Dir: envDir, S3: "minio", Machines: machines, Logf: func(format string, args ...any) {
		if strings.HasPrefix(format, "localenv:") { // progress, not the request log
			t.Logf(format, args...)
		}
	}})
	if err != nil {
		t.Fatalf("starting the local environment (%s machines): %v", machines, err)
	}
	t.Cleanup(func() {
		if err := le.Close(); err != nil {
			t.Errorf("closing the local environment: %v", err)
		}
		noQemuUnder(t, envDir)
	})
	t.Logf("local environment (%s machines) up in %s", machines, time.Since(start).Round(time.Second))
	a.le = le
	for _, v := range le.Vars() {
		a.vars[v.Name] = v.Value
		a.env = append(a.env, v.Name+"="+v.Value)
	}
	cfg := aws.Config{Region: le.Region, Credentials: credentials.NewStaticCredentialsProvider(le.Credentials.AccessKeyID, le.Credentials.SecretAccessKey, "")}
	a.ec2 = ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(a.vars["AWS_ENDPOINT_URL_EC2"]) })
	a.s3 = s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(a.vars["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	})
	if a.tplDir, err = filepath.Abs(filepath.Join("testdata", "amazon-ebs")); err != nil {
		t.Fatal(err)
	}
	return a
}

// seedCloudDisk seeds, on the namespace machines, an EBS-backed AMI of a GPT disk
// shaped like Debian's and Ubuntu's cloud images, its root the environment's lite
// root (with the imaging tools).
func (a *amazonEBSAcc) seedCloudDisk(t *testing.T) string {
	t.Helper()
	start := time.Now()
	img := filepath.Join(a.dir, "cloud.raw")
	if err := clouddisk.Make(a.ctx, filepath.Join(a.le.Dir, "roots", "lite"), img, 2<<30); err != nil {
		t.Fatal(err)
	}
	ami, err := a.le.EC2.Seed(ec2sim.SeedImage{Name: "debian-12-amd64-cloud-local", Description: "lite root on a cloud-image GPT disk (EBS, hvm, ENA)",
		EBS: true, Root: ec2sim.RootSource{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(img) // the snapshot is a copy
	t.Logf("EBS-backed source AMI %s seeded in %s", ami, time.Since(start).Round(time.Millisecond))
	return ami
}

// images are the account's AMIs with one of the names (wildcards as EC2 has them).
func (a *amazonEBSAcc) images(t *testing.T, names ...string) map[string]ec2types.Image {
	t.Helper()
	d, err := a.ec2.DescribeImages(a.ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: names}}})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]ec2types.Image{}
	for _, im := range d.Images {
		m[aws.ToString(im.Name)] = im
	}
	return m
}

// checkAMIs checks the build's two AMIs, name-instance-store (registered by the
// provisioner from a manifest in bucket, for the account) and name-ebs (amazon-ebs's),
// and returns them.
func (a *amazonEBSAcc) checkAMIs(t *testing.T, out, name, bucket string) (is, ebs ec2types.Image) {
	t.Helper()
	got := a.images(t, name+"-instance-store", name+"-ebs")
	is, ok := got[name+"-instance-store"]
	if !ok {
		t.Fatalf("no AMI %s-instance-store: %+v", name, got)
	}
	if is.RootDeviceType != ec2types.DeviceTypeInstanceStore || is.VirtualizationType != ec2types.VirtualizationTypeHvm || is.State != ec2types.ImageStateAvailable {
		t.Errorf("instance store AMI %s: root %s, %s, %s", aws.ToString(is.ImageId), is.RootDeviceType, is.VirtualizationType, is.State)
	}
	if !strings.Contains(out, "Registered AMI "+aws.ToString(is.ImageId)) {
		t.Errorf("the output does not name the instance store AMI %s", aws.ToString(is.ImageId))
	}
	loc := aws.ToString(is.ImageLocation)
	locBucket, key, _ := strings.Cut(loc, "/")
	if locBucket != bucket || !strings.HasSuffix(key, ".manifest.xml") {
		t.Fatalf("instance store AMI image location %q, want %s/....manifest.xml", loc, bucket)
	}
	m, err := a.le.S3Front.GetAsEC2(bucket, key)
	if err != nil {
		t.Fatalf("the manifest %s as EC2 reads it: %v", loc, err)
	}
	man, err := format.ParseManifest(m)
	if err != nil {
		t.Fatalf("manifest %s: %v", loc, err)
	}
	if man.User != a.le.EC2.AccountID() {
		t.Errorf("manifest user %q, want the account %s", man.User, a.le.EC2.AccountID())
	}
	ebs, ok = got[name+"-ebs"]
	if !ok {
		t.Fatalf("amazon-ebs made no AMI %s-ebs: %+v", name, got)
	}
	if ebs.RootDeviceType != ec2types.DeviceTypeEbs || !strings.Contains(out, aws.ToString(ebs.ImageId)) {
		t.Errorf("amazon-ebs AMI %s: root %s, or not in the output", aws.ToString(ebs.ImageId), ebs.RootDeviceType)
	}
	return is, ebs
}

// checkLeftAfterBuild: what the build used is gone; only the two AMIs and the EBS
// AMI's snapshot stay.
func (a *amazonEBSAcc) checkLeftAfterBuild(t *testing.T, ebs ec2types.Image) {
	t.Helper()
	keep := map[string]bool{}
	for _, bdm := range ebs.BlockDeviceMappings {
		if bdm.Ebs != nil {
			keep[aws.ToString(bdm.Ebs.SnapshotId)] = true
		}
	}
	if l := leftInEC2(a.ctx, t, a.ec2, keep); len(l) > 0 {
		t.Errorf("left behind by the build:\n%s", strings.Join(l, "\n"))
	}
}

// provisionerSaid is what the shell provisioner printed after "name: " in packer's
// output (its lines look like "    amazon-ebs.local: name: value").
func provisionerSaid(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`amazon-ebs\.local: ` + regexp.QuoteMeta(name) + `: (.*)`).FindStringSubmatch(out)
	if m == nil {
		t.Errorf("the shell provisioner's %q line is not in packer's output", name)
		return ""
	}
	return strings.TrimSpace(m[1])
}

// said is the value of the line "name: value" in text.
func said(text, name string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `: (.*)$`).FindStringSubmatch(text)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// noQemuUnder fails when a qemu process still runs with a path under dir on its
// command line (an instance of the environment).
func noQemuUnder(t *testing.T, dir string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(filepath.Base(args[0]), "qemu") && strings.Contains(string(b), dir) {
			t.Errorf("qemu left running after the environment closed: %s", strings.Join(args, " "))
		}
	}
}

// installAmazonPlugin builds packer-plugin-amazon (scripts/build-tools.sh amazon, cached
// in bin/) and installs it next to the test plugin.
func installAmazonPlugin(t *testing.T, packer string, env []string) {
	t.Helper()
	root := repoRoot(t)
	if out, err := exec.Command(filepath.Join(root, "scripts", "build-tools.sh"), "amazon").CombinedOutput(); err != nil {
		t.Fatalf("building packer-plugin-amazon with scripts/build-tools.sh amazon: %v: %s", err, out)
	}
	install := exec.Command(packer, "plugins", "install", "--path", filepath.Join(root, "bin", "packer-plugin-amazon"), "github.com/hashicorp/amazon")
	install.Env = env
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("packer plugins install of packer-plugin-amazon: %v: %s", err, out)
	}
}

func runPacker(ctx context.Context, t *testing.T, packer, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, packer, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// packerBuild runs `packer build` in dir with env (a whole environment) through
// packertest: when cancelAt is not empty, SIGINT goes to packer's process group as
// soon as a line of its output contains it, as a terminal's Ctrl-C does. It returns
// the output, the exit error and whether it interrupted.
func packerBuild(ctx context.Context, t *testing.T, packer, dir string, env []string, cancelAt string, vars ...string) (string, error, bool) {
	t.Helper()
	r := (&packertest.Packer{Bin: packer, Env: env}).Build(ctx, t, dir, nil, cancelAt, append(vars, ".")...)
	return r.Output, r.Err, r.Interrupted
}

// leftInEC2 lists what a finished build must not leave: instances that are not
// terminated, volumes, snapshots of the account other than keep, key pairs and
// security groups other than the default one.
func leftInEC2(ctx context.Context, t *testing.T, c *ec2.Client, keep map[string]bool) []string {
	t.Helper()
	var left []string
	di, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range di.Reservations {
		for _, in := range r.Instances {
			if in.State.Name != ec2types.InstanceStateNameTerminated {
				left = append(left, fmt.Sprintf("instance %s (%s)", aws.ToString(in.InstanceId), in.State.Name))
			}
		}
	}
	dv, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range dv.Volumes {
		left = append(left, fmt.Sprintf("volume %s (%s)", aws.ToString(v.VolumeId), v.State))
	}
	ds, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ds.Snapshots {
		if !keep[aws.ToString(s.SnapshotId)] {
			left = append(left, fmt.Sprintf("snapshot %s (%s)", aws.ToString(s.SnapshotId), aws.ToString(s.Description)))
		}
	}
	dk, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range dk.KeyPairs {
		left = append(left, "key pair "+aws.ToString(k.KeyName))
	}
	dg, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range dg.SecurityGroups {
		if aws.ToString(g.GroupName) != "default" {
			left = append(left, fmt.Sprintf("security group %s (%s)", aws.ToString(g.GroupId), aws.ToString(g.GroupName)))
		}
	}
	sort.Strings(left)
	return left
}

// deleteBuilt deregisters the account's AMIs, deletes their snapshots and empties the
// bucket (when it exists), as a user cleaning up after the test would.
func deleteBuilt(t *testing.T, c *ec2.Client, s3c *s3.Client, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, im := range d.Images {
		if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: im.ImageId}); err != nil {
			t.Errorf("cleanup: deregistering %s: %v", aws.ToString(im.ImageId), err)
		}
		for _, bdm := range im.BlockDeviceMappings {
			if bdm.Ebs == nil || bdm.Ebs.SnapshotId == nil {
				continue
			}
			if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: bdm.Ebs.SnapshotId}); err != nil {
				t.Errorf("cleanup: deleting snapshot %s of %s: %v", aws.ToString(bdm.Ebs.SnapshotId), aws.ToString(im.ImageId), err)
			}
		}
	}
	for _, k := range bucketObjects(ctx, t, s3c, bucket) {
		if _, err := s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)}); err != nil {
			t.Errorf("cleanup: deleting s3://%s/%s: %v", bucket, k, err)
		}
	}
}

// bucketObjects lists the bucket's keys; a bucket that does not exist has none.
func bucketObjects(ctx context.Context, t *testing.T, c *s3.Client, bucket string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		var nb interface{ ErrorCode() string }
		if errors.As(err, &nb) && nb.ErrorCode() == "NoSuchBucket" {
			return nil
		}
		if err != nil {
			t.Fatalf("listing %s: %v", bucket, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}
