package vm_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/crypto/ssh"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

var creds = ec2sim.Credentials{AccessKeyID: "AKIDVMTEST0000000001", SecretAccessKey: "vm/secret/key/for/tests+0123456789abcdef"}

// TestPVInstanceBoots boots the paravirtual Debian seed through RunInstances on the
// VM launcher (m3.medium: one 4 GB ext3 instance store volume, mapped at /dev/sdb),
// then checks from inside the guest: the kernel the AMI's menu.lst names, the
// metadata service (IMDSv2 token flow), the instance store disk, S3 at the very
// host:port a presigned URL names; then the console output, and that termination
// leaves no qemu process, namespace or instance directory.
func TestPVInstanceBoots(t *testing.T) {
	testroot.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img, err := localenv.SeedImage(ctx, localenv.SeedPV, t.Logf)
	if err != nil {
		t.Fatal(err)
	}

	backend, err := s3env.StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	front, err := s3env.NewFront(backend, s3env.FrontOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	s3c := front.Client("us-east-1")
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("vm-test")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("vm-test"), Key: aws.String("hello"), Body: strings.NewReader("hello from S3")}); err != nil {
		t.Fatal(err)
	}
	presigned, err := s3.NewPresignClient(s3c).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("vm-test"), Key: aws.String("hello")})
	if err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	launcher := &vm.VMLauncher{WorkDir: filepath.Join(work, "instances"), Forward: []string{strings.TrimPrefix(front.URL(), "http://")}, Logf: t.Logf, ProbeKernel: probeKernel(t)}
	srv, err := ec2sim.Start(ec2sim.Config{Credentials: creds, DataDir: filepath.Join(work, "ec2"), Launcher: launcher, LaunchTimeout: localenv.VMLaunchTimeout, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ami, err := srv.Seed(ec2sim.SeedImage{Name: localenv.DebianPVAMIName, VirtualizationType: "paravirtual", KernelID: localenv.PVGrubKernelID, Root: ec2sim.RootSource{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	c := ec2.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, ""), RetryMaxAttempts: 1},
		func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.URL()) })
	kp, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("vm")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: "m3.medium", MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		KeyName: aws.String("vm"), MetadataOptions: &types.InstanceMetadataOptionsRequest{HttpTokens: types.HttpTokensStateRequired}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	in := waitState(t, c, id, types.InstanceStateNameRunning)
	t.Logf("boot to SSH (PV, TCG, m3.medium): %s", time.Since(start).Round(100*time.Millisecond))
	ip := aws.ToString(in.PrivateIpAddress)
	console := func() string {
		cons, err := c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
		if err != nil {
			return err.Error()
		}
		text, _ := base64.StdEncoding.DecodeString(aws.ToString(cons.Output))
		return string(text)
	}
	cl, err := dialSSH(ip, "admin", aws.ToString(kp.KeyMaterial))
	if err != nil {
		t.Fatalf("%v; console:\n%s", err, console())
	}
	defer cl.Close()

	if got := run(t, cl, "cat /proc/cmdline"); !strings.Contains(got, "root=LABEL=cloudimg-rootfs") || !strings.Contains(got, "console=ttyS0") {
		t.Errorf("guest command line %q: want the menu.lst entry's root= and the serial console", got)
	}
	if got := run(t, cl, "findmnt -n -o SOURCE,FSTYPE /"); !strings.Contains(got, "/dev/vda ext4") {
		t.Errorf("guest root: %q, want the AMI's bare ext4 on /dev/vda", got)
	}
	// IMDSv2: HttpTokens=required, so a v1 GET gets 401 and the token flow works.
	imds := `python3 - <<'PY'
import urllib.request, urllib.error
base = "http://169.254.169.254/latest/"
try:
    urllib.request.urlopen(base + "meta-data/instance-id", timeout=5)
    print("v1=200")
except urllib.error.HTTPError as e:
    print("v1=%d" % e.code)
tok = urllib.request.urlopen(urllib.request.Request(base + "api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}), timeout=5).read().decode()
for p in ["instance-id", "instance-type", "kernel-id", "block-device-mapping/ephemeral0", "local-ipv4"]:
    r = urllib.request.urlopen(urllib.request.Request(base + "meta-data/" + p, headers={"X-aws-ec2-metadata-token": tok}), timeout=5)
    print(p + "=" + r.read().decode())
PY`
	got := run(t, cl, imds)
	for _, want := range []string{"v1=401", "instance-id=" + id, "instance-type=m3.medium", "kernel-id=" + localenv.PVGrubKernelID, "block-device-mapping/ephemeral0=sdb", "local-ipv4=" + ip} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("metadata service from the guest: want %q in:\n%s", want, got)
		}
	}
	// The instance store volume: the second disk, 4 GiB, ext3 as EC2 formats m3's.
	if got := strings.Join(strings.Fields(run(t, cl, "lsblk -b -n -d -o NAME,SIZE,SERIAL /dev/vdb; sudo blkid -o value -s TYPE /dev/vdb 2>/dev/null")), " "); got != "vdb 4294967296 ephemeral0 ext3" {
		t.Errorf("instance store disk: %q, want vdb of 4 GiB (serial ephemeral0) formatted ext3", got)
	}
	if got := run(t, cl, "lsblk -n -d -o NAME | sort | tr '\\n' ' '"); strings.Contains(got, "vdc") {
		t.Errorf("disks %q: m3.medium has one instance store volume", got)
	}
	// S3 at the host:port the URL was presigned for (the guest's relay unit may still
	// be starting right after boot).
	get := fmt.Sprintf(`python3 -c 'import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' %s`, shellQuote(presigned.URL))
	var s3out string
	for deadline := time.Now().Add(90 * time.Second); ; {
		s3out, err = runErr(cl, get)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if s3out != "hello from S3" {
		t.Errorf("GET of a presigned URL from the guest: %q (%v), want the object", s3out, err)
	}

	if text := console(); !strings.Contains(text, "Linux version") {
		t.Errorf("console output (%d bytes) has no kernel banner", len(text))
	}

	cl.Close()
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, id, types.InstanceStateNameTerminated)
	waitGone(t, launcher)
}

// TestBrokenImageNeverAnswers: an hvm image whose boot sector is zeroed never answers
// SSH; Launch's error carries the console's last lines (SeaBIOS saying why).
func TestBrokenImageNeverAnswers(t *testing.T) {
	testroot.Require(t)
	work := t.TempDir()
	img := filepath.Join(work, "broken.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	launcher := &vm.VMLauncher{WorkDir: filepath.Join(work, "instances"), Logf: t.Logf, ProbeKernel: probeKernel(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst, err := launcher.Launch(ctx, ec2sim.LaunchSpec{InstanceID: "i-0000000000broken", Root: ec2sim.RootSource{Image: img},
		ImageID: "ami-00000000", InstanceType: "m3.medium", Virtualization: "hvm", RootDeviceName: "/dev/sda1"})
	if err == nil {
		inst.Terminate(context.Background())
		t.Fatal("a VM with a zeroed boot sector answered SSH")
	}
	t.Logf("Launch: %v", err)
	if !strings.Contains(err.Error(), "last console lines") || !strings.Contains(err.Error(), "SeaBIOS") || !strings.Contains(err.Error(), "not a bootable disk") {
		t.Errorf("Launch error has no console lines saying why: %v", err)
	}
	waitGone(t, launcher)
}

// waitGone checks that nothing of the launcher's VMs remains: qemu, namespace, directory.
func waitGone(t *testing.T, l *vm.VMLauncher) {
	t.Helper()
	if len(l.Launched()) == 0 {
		t.Fatal("the launcher started no VM")
	}
	for _, li := range l.Launched() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var left []string
			if vm.IsQEMUOf(li.PID, li.Dir) {
				left = append(left, fmt.Sprintf("qemu %d", li.PID))
			}
			if _, err := os.Stat(filepath.Join("/run/netns", li.NetNS)); err == nil {
				left = append(left, "netns "+li.NetNS)
			}
			if _, err := os.Stat(li.Dir); err == nil {
				left = append(left, "directory "+li.Dir)
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s left behind: %s", li.InstanceID, strings.Join(left, ", "))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func waitState(t *testing.T, c *ec2.Client, id string, want types.InstanceStateName) types.Instance {
	t.Helper()
	deadline := time.Now().Add(localenv.VMLaunchTimeout + time.Minute)
	for {
		out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		in := out.Reservations[0].Instances[0]
		if in.State.Name == want {
			return in
		}
		if in.State.Name == types.InstanceStateNameTerminated {
			t.Fatalf("instance %s terminated while waiting for %s: %s", id, want, aws.ToString(in.StateReason.Message))
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s still %s, want %s", id, in.State.Name, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func dialSSH(ip, user, keyPEM string) (*ssh.Client, error) {
	signer, err := ssh.ParsePrivateKey([]byte(keyPEM))
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second}
	var lastErr error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		cl, err := ssh.Dial("tcp", ip+":22", cfg)
		if err == nil {
			return cl, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("ssh %s@%s: %v", user, ip, lastErr)
}

func runErr(cl *ssh.Client, cmd string) (string, error) {
	s, err := cl.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

func run(t *testing.T, cl *ssh.Client, cmd string) string {
	t.Helper()
	out, err := runErr(cl, cmd)
	if err != nil {
		t.Fatalf("guest: %q: %v: %s", cmd, err, out)
	}
	return out
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
