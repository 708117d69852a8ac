package localenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/crypto/ssh"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

func varMap(vars []Var) map[string]string {
	m := map[string]string{}
	for _, v := range vars {
		m[v.Name] = v.Value
	}
	return m
}

func clients(v map[string]string) (*ec2.Client, *sts.Client) {
	cfg := aws.Config{Region: v["AWS_REGION"], Credentials: credentials.NewStaticCredentialsProvider(v["AWS_ACCESS_KEY_ID"], v["AWS_SECRET_ACCESS_KEY"], "")}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(v["AWS_ENDPOINT_URL_EC2"]) }),
		sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(v["AWS_ENDPOINT_URL_STS"]) })
}

// launchAndSSH runs one instance of the base AMI, logs in as admin and runs cmd there.
func launchAndSSH(t *testing.T, v map[string]string, cmd string) (ip, out string) {
	return launchAMIAndSSH(t, v, v["INSTANCESTORE_SOURCE_AMI"], "m3.medium", cmd)
}

func launchAMIAndSSH(t *testing.T, v map[string]string, ami, itype, cmd string) (ip, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, s := clients(v)
	who, err := s.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(who.Account) != v["INSTANCESTORE_ACCOUNT_ID"] {
		t.Fatalf("GetCallerIdentity: %v %+v", err, who)
	}
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, Filters: []types.Filter{
		{Name: aws.String("name"), Values: []string{"instancestore-lite-*"}}, {Name: aws.String("root-device-type"), Values: []string{"instance-store"}}}})
	if err != nil || len(imgs.Images) < 2 {
		t.Fatalf("base AMIs: %v %+v", err, imgs)
	}
	kp, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("t-" + time.Now().Format("150405.000"))})
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceType(itype),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: kp.KeyName})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	for ip == "" {
		d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		in := d.Reservations[0].Instances[0]
		switch in.State.Name {
		case types.InstanceStateNameRunning:
			ip = aws.ToString(in.PrivateIpAddress)
		case types.InstanceStateNamePending:
			time.Sleep(100 * time.Millisecond)
		default:
			t.Fatalf("instance %s is %s", id, in.State.Name)
		}
	}
	signer, err := ssh.ParsePrivateKey([]byte(aws.ToString(kp.KeyMaterial)))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ssh.Dial("tcp", ip+":22", &ssh.ClientConfig{User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	b, err := sess.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s on the instance: %v: %s", cmd, err, b)
	}
	return ip, string(b)
}

// netnsOf finds the instance network namespace holding ip ("" when none does).
func netnsOf(t *testing.T, ip string) string {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), instance.Prefix) {
			continue
		}
		out, _ := exec.Command("ip", "-n", e.Name(), "-o", "-4", "addr", "show").CombinedOutput()
		if strings.Contains(string(out), " "+ip+"/") {
			return e.Name()
		}
	}
	return ""
}

func TestStartInProcess(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	e, err := Start(context.Background(), Options{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	v := varMap(e.Vars())
	// The S3 endpoint answers inside the instance at the host's own URL.
	ip, out := launchAndSSH(t, v, "wget -q -O - "+v["AWS_ENDPOINT_URL_S3"]+"/ && echo reached; grep ' / ' /proc/self/mounts; "+
		"export PATH=$PATH:/usr/sbin; dd if=/dev/zero of=/tmp/fs.img bs=1M count=8 2>/dev/null && mkfs.ext4 -q -F -t ext4 -L x /tmp/fs.img && debugfs -R stats /tmp/fs.img 2>/dev/null | grep -q 'volume name:.*x' && mount --version && echo imaging-tools-ok")
	if !strings.Contains(out, "reached") {
		t.Fatalf("S3 from the instance: %q", out)
	}
	if !strings.Contains(out, "imaging-tools-ok") {
		t.Fatalf("imaging tools in the instance: %q", out)
	}
	// The root is a mounted ext4 filesystem, as on EC2.
	if !strings.Contains(out, " / ext4 ") {
		t.Fatalf("the instance's / is not an ext4 mount: %q", out)
	}
	ns := netnsOf(t, ip)
	if ns == "" {
		t.Fatalf("no namespace holds the instance address %s", ip)
	}
	cert := v["INSTANCESTORE_EC2_CERT"]
	certPEM, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if l := Leftovers(dir); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		t.Fatalf("instance namespace %s still there after Close", ns)
	}
	for _, d := range []string{"instances", "roots", "ec2/images"} {
		if _, err := os.Stat(filepath.Join(dir, d)); err == nil {
			t.Errorf("%s still there after Close", d)
		}
	}
	// The EC2 certificate outlives the environment: the next one uses it again.
	e2, err := Start(context.Background(), Options{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if got := varMap(e2.Vars())["INSTANCESTORE_EC2_CERT"]; got != cert {
		t.Fatalf("EC2 cert %s, then %s", cert, got)
	}
	if again, _ := os.ReadFile(cert); !bytes.Equal(again, certPEM) {
		t.Fatal("the EC2 certificate changed between two environments in one directory")
	}
}

// TestUpDown drives the command: up daemonizes and prints the variables, an instance
// runs, down leaves nothing (namespace, mount, loop device, process).
func TestUpDown(t *testing.T) {
	testroot.Require(t)
	bin := buildCommand(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	up := exec.Command(bin, "up", "--dir", dir)
	up.Stdout, up.Stderr = &stdout, &stderr
	if err := up.Run(); err != nil {
		t.Fatalf("up: %v\n%s", err, stderr.String())
	}
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			exec.Command(bin, "down", "--dir", dir).Run()
		}
	})
	vars, err := ReadEnvFile(filepath.Join(dir, EnvFileName))
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != FormatVars(vars) {
		t.Fatalf("up printed %q, env file has %q", stdout.String(), FormatVars(vars))
	}
	v := varMap(vars)
	for _, k := range []string{"AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "INSTANCESTORE_EC2_CERT", "INSTANCESTORE_SOURCE_AMI"} {
		if v[k] == "" {
			t.Errorf("up did not give %s", k)
		}
	}
	if log, _ := os.ReadFile(filepath.Join(dir, LogFileName)); strings.Contains(string(log), v["AWS_SECRET_ACCESS_KEY"]) {
		t.Error("the daemon's log holds the secret access key")
	}
	if err := exec.Command(bin, "up", "--dir", dir).Run(); err == nil {
		t.Error("a second up on the same directory succeeded")
	}
	ip, _ := launchAndSSH(t, v, "true")
	ns := netnsOf(t, ip)
	if ns == "" {
		t.Fatalf("no namespace holds the instance address %s", ip)
	}
	pidB, _ := os.ReadFile(filepath.Join(dir, PIDFileName))
	out, err := exec.Command(bin, "down", "--dir", dir).CombinedOutput()
	downDone = true
	if err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if l := Leftovers(dir); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		t.Fatalf("instance namespace %s still there after down", ns)
	}
	var pid int
	if _, err := fmtSscan(string(pidB), &pid); err != nil || processAlive(pid) {
		t.Fatalf("daemon pid %q still alive after down", pidB)
	}
}

func TestNeedsRoot(t *testing.T) {
	testroot.Require(t) // to switch to an unprivileged user
	bin := buildCommand(t)
	cmd := exec.Command(bin, "up", "--dir", filepath.Join(filepath.Dir(bin), "x"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs root") || !strings.Contains(string(out), "sudo") {
		t.Fatalf("as nobody: %v %s", err, out)
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildCommand builds cmd/instancestore-localenv once, into a directory any user can
// read (TestNeedsRoot runs it as nobody).
func buildCommand(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "localenv-cmd-"); buildErr != nil {
			return
		}
		os.Chmod(binDir, 0o755)
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "instancestore-localenv"), "../cmd/instancestore-localenv").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building the command: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "instancestore-localenv")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func fmtSscan(s string, v *int) (int, error) { return fmt.Sscan(strings.TrimSpace(s), v) }

// TestDebianAMI boots the optional Debian base AMI (debootstrap, cached in
// instance.CacheDir(); the first run on a machine takes minutes).
func TestDebianAMI(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e, err := Start(ctx, Options{Dir: dir, Debian: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	v := varMap(e.Vars())
	if v["INSTANCESTORE_DEBIAN_AMI"] == "" {
		t.Fatal("no INSTANCESTORE_DEBIAN_AMI")
	}
	_, out := launchAMIAndSSH(t, v, v["INSTANCESTORE_DEBIAN_AMI"], "m3.medium", "sudo -n cat /etc/os-release; grep ' / ' /proc/self/mounts; ls /etc/ssh/ssh_host_* 2>&1 || true")
	if !strings.Contains(out, "bookworm") || !strings.Contains(out, " / ext4 ") || !strings.Contains(out, "No such file") {
		t.Fatalf("Debian instance: %q", out)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if l := Leftovers(dir); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

// TestDownAfterCrash: the daemon dies with SIGKILL while an instance runs; down still
// leaves nothing of it behind.
func TestDownAfterCrash(t *testing.T) {
	testroot.Require(t)
	bin := buildCommand(t)
	dir := t.TempDir()
	if out, err := exec.Command(bin, "up", "--dir", dir).Output(); err != nil {
		t.Fatalf("up: %v %s", err, out)
	}
	vars, err := ReadEnvFile(filepath.Join(dir, EnvFileName))
	if err != nil {
		t.Fatal(err)
	}
	v := varMap(vars)
	ip, _ := launchAndSSH(t, v, "true")
	ns := netnsOf(t, ip)
	if ns == "" {
		t.Fatalf("no namespace holds the instance address %s", ip)
	}
	pidB, _ := os.ReadFile(filepath.Join(dir, PIDFileName))
	var pid int
	if _, err := fmtSscan(string(pidB), &pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); processAlive(pid); {
		if time.Now().After(deadline) {
			t.Fatal("the daemon survived SIGKILL")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command(bin, "down", "--dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("down after a crash: %v\n%s", err, out)
	}
	if l := Leftovers(dir); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		t.Fatalf("instance namespace %s still there after down", ns)
	}
	if _, err := os.Stat(filepath.Join(dir, "instances")); err == nil {
		t.Fatal("instance copies still there after down")
	}
}
