package bundle

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
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
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// TestAcceptanceAmazonEBS runs the real `packer build` of testdata/amazon-ebs: HashiCorp's
// amazon-ebs builder (packer-plugin-amazon v1.8.2, pinned in tools/amazon) launches an
// EBS-backed AMI seeded from a cloud-image-shaped GPT disk on a Nitro type (t3.micro)
// in the local EC2, a shell provisioner writes a file and instancestore-bundle bundles
// the live root and registers an instance store-backed AMI; amazon-ebs then makes its
// own EBS-backed AMI. Both AMIs are launched and the file is read over SSH; nothing of
// the build is left in EC2. A second build is interrupted (SIGINT) while the
// provisioner bundles and must leave nothing either: no instance, volume, snapshot, key
// pair, security group, AMI or S3 object.
func TestAcceptanceAmazonEBS(t *testing.T) {
	testroot.Acceptance(t)
	testroot.Require(t)
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the test plugin serves as the agent only on linux/amd64")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute) // Packer, the amazon plugin and MinIO may be built first
	defer cancel()
	dir := t.TempDir()
	packer, env := installPlugin(t, dir)
	installAmazonPlugin(t, packer, env)

	le, err := localenv.Start(ctx, localenv.Options{Dir: filepath.Join(dir, "localenv"), S3: "minio", Logf: t.Logf})
	if err != nil {
		t.Fatalf("starting the local environment: %v", err)
	}
	t.Cleanup(func() {
		if err := le.Close(); err != nil {
			t.Errorf("closing the local environment: %v", err)
		}
	})
	vars := map[string]string{}
	for _, v := range le.Vars() {
		vars[v.Name] = v.Value
		env = append(env, v.Name+"="+v.Value)
	}
	cfg := aws.Config{Region: le.Region, Credentials: credentials.NewStaticCredentialsProvider(le.Credentials.AccessKeyID, le.Credentials.SecretAccessKey, "")}
	ec2c := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(vars["AWS_ENDPOINT_URL_EC2"]) })
	s3c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(vars["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	})

	// The source: an EBS-backed AMI of a GPT disk shaped like Debian's and Ubuntu's
	// cloud images, its root the environment's lite root (with the imaging tools).
	start := time.Now()
	img := filepath.Join(dir, "cloud.raw")
	if err := clouddisk.Make(ctx, filepath.Join(le.Dir, "roots", "lite"), img, 2<<30); err != nil {
		t.Fatal(err)
	}
	sourceAMI, err := le.EC2.Seed(ec2sim.SeedImage{Name: "debian-12-amd64-cloud-local", Description: "lite root on a cloud-image GPT disk (EBS, hvm, ENA)",
		EBS: true, Root: ec2sim.RootSource{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(img) // the snapshot is a copy
	t.Logf("EBS-backed source AMI %s seeded in %s", sourceAMI, time.Since(start).Round(time.Millisecond))

	tplDir, err := filepath.Abs(filepath.Join("testdata", "amazon-ebs"))
	if err != nil {
		t.Fatal(err)
	}
	bucket := "amazon-ebs-bundles"
	name := "amazon-ebs-acc"
	// Whatever the checks find, what the build made goes again.
	t.Cleanup(func() { deleteBuilt(t, ec2c, s3c, bucket) })

	if out, err := runPacker(ctx, t, packer, tplDir, env, "validate", "-var", "source_ami="+sourceAMI, "-var", "s3_bucket="+bucket, "."); err != nil {
		t.Fatalf("packer validate: %v\n%s", err, out)
	}
	logFile := filepath.Join(dir, "packer.log")
	start = time.Now()
	out, err, _ := packerBuild(ctx, t, packer, tplDir, append(env, "PACKER_LOG=1", "PACKER_LOG_PATH="+logFile), "",
		"-var", "source_ami="+sourceAMI, "-var", "s3_bucket="+bucket, "-var", "ami_name="+name)
	elapsed := time.Since(start)
	if err != nil {
		logText, _ := os.ReadFile(logFile)
		t.Fatalf("packer build: %v\n%s\n--- end of packer.log ---\n%s", err, out, tail(string(logText), 20000))
	}
	t.Logf("packer build output:\n%s", out)
	t.Logf("packer build (amazon-ebs + instancestore-bundle) took %s", elapsed.Round(100*time.Millisecond))

	// The instance store-backed AMI: registered from a manifest in the bucket.
	images := func(names ...string) map[string]ec2types.Image {
		t.Helper()
		d, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
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
	got := images(name+"-instance-store", name+"-ebs")
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
	// amazon-ebs's temporary key pair is not left in the image's authorized_keys.
	if !strings.Contains(out, "temporary SSH key line(s) from /home/admin/.ssh/authorized_keys") {
		t.Errorf("the output does not show amazon-ebs's temporary SSH key removed from the image")
	}
	loc := aws.ToString(is.ImageLocation)
	locBucket, key, _ := strings.Cut(loc, "/")
	if locBucket != bucket || !strings.HasSuffix(key, ".manifest.xml") {
		t.Fatalf("instance store AMI image location %q, want %s/....manifest.xml", loc, bucket)
	}
	m, err := le.S3Front.GetAsEC2(bucket, key)
	if err != nil {
		t.Fatalf("the manifest %s as EC2 reads it: %v", loc, err)
	}
	man, err := format.ParseManifest(m)
	if err != nil {
		t.Fatalf("manifest %s: %v", loc, err)
	}
	if man.User != le.EC2.AccountID() {
		t.Errorf("manifest user %q, want the account %s", man.User, le.EC2.AccountID())
	}
	// amazon-ebs's own AMI, of the same machine.
	ebs, ok := got[name+"-ebs"]
	if !ok {
		t.Fatalf("amazon-ebs made no AMI %s-ebs: %+v", name, got)
	}
	if ebs.RootDeviceType != ec2types.DeviceTypeEbs || !strings.Contains(out, aws.ToString(ebs.ImageId)) {
		t.Errorf("amazon-ebs AMI %s: root %s, or not in the output", aws.ToString(ebs.ImageId), ebs.RootDeviceType)
	}

	// A new instance of each finds the file the shell provisioner wrote; the instance
	// store one on a type that runs instance store-backed hvm AMIs.
	want := "provisioned under amazon-ebs from " + sourceAMI + "\n"
	// The instance store AMI's ~admin/.ssh/authorized_keys is empty; amazon-ebs's own
	// AMI keeps the temporary key (ssh_clear_authorized_keys is off by default).
	keysLeft := map[string]string{aws.ToString(is.ImageId): "0", aws.ToString(ebs.ImageId): "1"}
	for _, l := range []struct{ ami, itype string }{{aws.ToString(is.ImageId), "m3.medium"}, {aws.ToString(ebs.ImageId), "t3.micro"}} {
		start := time.Now()
		text, err := launch.Run(ctx, ec2c, l.ami, l.itype, "admin", "cat /etc/instancestore/amazon-ebs.txt; wc -l <.ssh/authorized_keys >/tmp/keys; test $(cat /tmp/keys) = "+keysLeft[l.ami], t.Logf)
		if err != nil {
			t.Fatalf("launching %s on %s: %v\n%s", l.ami, l.itype, err, text)
		}
		if text != want {
			t.Errorf("%s on %s: the file reads %q, want %q", l.ami, l.itype, text, want)
		}
		t.Logf("%s on %s: launched and read over SSH in %s", l.ami, l.itype, time.Since(start).Round(time.Millisecond))
	}
	// What the build used is gone: only the two AMIs and the EBS AMI's snapshot stay.
	keep := map[string]bool{}
	for _, bdm := range ebs.BlockDeviceMappings {
		if bdm.Ebs != nil {
			keep[aws.ToString(bdm.Ebs.SnapshotId)] = true
		}
	}
	if l := leftInEC2(ctx, t, ec2c, keep); len(l) > 0 {
		t.Errorf("left behind by the build:\n%s", strings.Join(l, "\n"))
	}

	// The same build, interrupted while the provisioner bundles: amazon-ebs's cleanup
	// and the provisioner's leave nothing behind.
	deleteBuilt(t, ec2c, s3c, bucket)
	before := bucketObjects(ctx, t, s3c, bucket)
	out, err, interrupted := packerBuild(ctx, t, packer, tplDir, env, "Bundling for account",
		"-var", "source_ami="+sourceAMI, "-var", "s3_bucket="+bucket, "-var", "ami_name="+name+"-cancelled")
	if !interrupted || err == nil {
		t.Fatalf("the build was not interrupted while bundling (interrupted %v, err %v):\n%s", interrupted, err, out)
	}
	t.Logf("interrupted build output:\n%s", out)
	if got := images(name + "-cancelled-*"); len(got) > 0 {
		t.Errorf("the interrupted build left AMIs: %v", got)
	}
	if l := leftInEC2(ctx, t, ec2c, nil); len(l) > 0 {
		t.Errorf("left behind by the interrupted build:\n%s", strings.Join(l, "\n"))
	}
	if after := bucketObjects(ctx, t, s3c, bucket); len(after) != len(before) {
		t.Errorf("the interrupted build left objects in %s: %v (before: %v)", bucket, after, before)
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

// packerBuild runs `packer build` in dir. When cancelAt is not empty, SIGINT goes to
// packer's process group as soon as a line of its output contains it, as a terminal's
// Ctrl-C does. It returns the output, the exit error and whether it interrupted.
func packerBuild(ctx context.Context, t *testing.T, packer, dir string, env []string, cancelAt string, vars ...string) (string, error, bool) {
	t.Helper()
	cmd := exec.CommandContext(ctx, packer, append(append([]string{"build", "-color=false"}, vars...), ".")...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	interrupted := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			if cancelAt != "" && !interrupted && strings.Contains(line, cancelAt) {
				interrupted = true
				t.Logf("sending SIGINT to packer at %q", line)
				syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
			}
		}
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	return out.String(), err, interrupted
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
