//go:build linux

package driver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	sshcomm "github.com/hashicorp/packer-plugin-sdk/sdk-internals/communicator/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// TestKilledAgentSwept is a SIGKILL of the real agent mid-imaging on an instance of
// the local EC2 (a namespace instance booted from an ext4 root image, with loop
// devices, as bundle-vol finds on EC2), over SSH: while bundle-vol copies the root
// into its scratch image, the agent is killed, leaving its marker, the image's mount,
// the volume's bind mount, the image's loop device and the scratch. The next agent
// run on that instance (a real bundle through Run) must find all of it by the marker,
// remove it before it starts imaging and say so; after it nothing of either run is
// left on the instance: no mount, no loop device, no scratch, no marker.
func TestKilledAgentSwept(t *testing.T) {
	sharedEnv(t) // the agent binary
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	env, err := localenv.Start(ctx, localenv.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting the local environment: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("closing the local environment: %v", err)
		}
	})
	vars := map[string]string{}
	for _, v := range env.Vars() {
		vars[v.Name] = v.Value
	}
	awsCfg := aws.Config{Region: env.Region, Credentials: credentials.NewStaticCredentialsProvider(vars["AWS_ACCESS_KEY_ID"], vars["AWS_SECRET_ACCESS_KEY"], ""),
		RetryMaxAttempts: 10, HTTPClient: &http.Client{Timeout: 30 * time.Second}}
	ec2c := ec2.NewFromConfig(awsCfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(env.EC2.URL()) })
	ip, signer := launchInstance(t, ctx, ec2c, env.BaseAMIs[localenv.LiteAMIName])

	comm, err := sshcomm.New(ip+":22", &sshcomm.Config{
		SSHConfig: &ssh.ClientConfig{User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second},
		Connection:       func() (net.Conn, error) { return net.DialTimeout("tcp", ip+":22", 30*time.Second) },
		HandshakeTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatalf("connecting over SSH: %v", err)
	}
	sh := func(cmd string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		rc := &packersdk.RemoteCmd{Command: cmd, Stdout: &out, Stderr: &errOut}
		if err := comm.Start(ctx, rc); err != nil {
			t.Fatalf("%s on the instance: %v", cmd, err)
		}
		if st := rc.Wait(); st != 0 {
			t.Fatalf("%s on the instance: exit %d: %s%s", cmd, st, out.String(), errOut.String())
		}
		return out.String()
	}

	// Something to copy for a while: the kill must land in the middle of the copy.
	sh("sudo -n mkdir -p /var/tmp && sudo -n dd if=/dev/urandom of=/var/big.bin bs=1M count=160 2>/dev/null && echo ok")

	// The first agent, started as the driver starts it (sudo, the request on stdin).
	agentDir := "/tmp/killed-agent-" + randHex(4)
	bin, err := os.Open(agentPath)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	up := &packersdk.RemoteCmd{Command: fmt.Sprintf("mkdir -m 700 %s && cat > %s/instancestore-bundler && chmod 700 %s/instancestore-bundler", agentDir, agentDir, agentDir), Stdin: bin}
	if err := comm.Start(ctx, up); err != nil {
		t.Fatal(err)
	}
	if st := up.Wait(); st != 0 {
		t.Fatalf("uploading the agent: exit %d", st)
	}
	key, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	req := agent.Request{Version: agent.ProtocolVersion, Mode: agent.ModeVolume, Name: "killed", Key: key.KeyHex(), IV: key.IVHex(),
		Volume: &agent.VolumeRequest{Volume: "/", Scratch: "/var/tmp", Partition: "none"}}
	line, _ := json.Marshal(req)
	stdoutR, stdoutW := io.Pipe()
	first := &packersdk.RemoteCmd{Command: "sudo -n " + agentDir + "/instancestore-bundler agent",
		Stdin: io.MultiReader(bytes.NewReader(append(line, '\n')), blockReader{ctx}), Stdout: stdoutW, Stderr: io.Discard}
	if err := comm.Start(ctx, first); err != nil {
		t.Fatal(err)
	}
	logs := make(chan []string, 1)
	go func() {
		var msgs []string
		sc := bufio.NewScanner(stdoutR)
		for sc.Scan() {
			var e agent.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Type == agent.EventLog || e.Type == agent.EventError) {
				msgs = append(msgs, string(e.Type)+": "+e.Message)
			}
		}
		logs <- msgs
	}()
	go func() { first.Wait(); stdoutW.Close() }()

	// The moment: the agent (its host PID, found by its unique path) has the volume's
	// bind mount in its scratch, which Build makes just before the copy starts.
	pid, copying := waitForCopy(t, agentDir+"/instancestore-bundler")
	// Then until files are landing in the image: 16 MiB more in use on its filesystem.
	imageFS := fmt.Sprintf("/proc/%d/root%s", pid, strings.TrimSuffix(copying, "/volume")+"/mnt")
	base, used := int64(-1), int64(0)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var st unix.Statfs_t
		if err := unix.Statfs(imageFS, &st); err != nil {
			t.Fatalf("the image's filesystem: %v", err)
		}
		if used = int64(st.Blocks-st.Bfree) * st.Bsize; base < 0 {
			base = used
		}
		if used-base >= 16<<20 {
			break
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL of the agent: %v", err)
	}
	t.Logf("SIGKILL of the agent (host pid %d) while copying into %s: %d MiB copied of about 207", pid, copying, (used-base)>>20)
	var firstLog []string
	select {
	case firstLog = <-logs:
	case <-time.After(time.Minute):
		t.Fatal("the killed agent's session did not end")
	}
	t.Logf("the killed agent said:\n%s", strings.Join(firstLog, "\n"))
	for _, m := range firstLog {
		if strings.Contains(m, "copied in") || strings.HasPrefix(m, string(agent.EventError)) {
			t.Fatalf("the kill came after the copy had finished: %q", m)
		}
	}

	// What the dead run left: its marker, its mounts, its loop device, its scratch.
	markers := strings.Fields(sh("sudo -n ls " + agent.StateDir))
	if len(markers) != 2 {
		t.Fatalf("%s holds %v, want the dead run's marker and lock", agent.StateDir, markers)
	}
	var marker struct {
		PID int    `json:"pid"`
		Dir string `json:"dir"`
	}
	if err := json.Unmarshal([]byte(sh("sudo -n sh -c 'cat "+agent.StateDir+"/*.json'")), &marker); err != nil || !strings.HasPrefix(marker.Dir, "/var/tmp/instancestore-run-") {
		t.Fatalf("the dead run's marker: %+v, %v", marker, err)
	}
	mi := sh("sed -n p /proc/self/mountinfo")
	mountsLeft := mountsUnder(mi, marker.Dir)
	loopsLeft := hostLoopsBacking(t, marker.Dir)
	if len(mountsLeft) < 2 || len(loopsLeft) < 1 {
		t.Fatalf("after the kill: mounts %v (of\n%s), loop devices %v under %s; want the image's mount and the volume's bind mount, and the image's loop device", mountsLeft, mi, loopsLeft, marker.Dir)
	}
	t.Logf("left by the killed run %d: mounts %v, loop devices %v, scratch %s", marker.PID, mountsLeft, loopsLeft, marker.Dir)

	// The next agent run: a real bundle of the root through the driver.
	bucketName := "killed-" + randHex(4)
	if _, err := env.S3Front.Client(env.Region).CreateBucket(ctx, s3CreateBucket(bucketName)); err != nil {
		t.Fatal(err)
	}
	s3cfg := awsCfg.Copy()
	s3cfg.BaseEndpoint = aws.String(env.S3Front.URL())
	bucket, err := s3bundle.New(s3cfg, env.Region, bucketName, "after-kill", s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, userKey, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	ui := newRecordingUi()
	res, err := Run(ctx, Config{Comm: comm, Ui: ui, Bucket: bucket,
		Job: agent.Request{Mode: agent.ModeVolume, Name: "after-kill", Concurrency: 2, ProgressMillis: 500,
			Volume: &agent.VolumeRequest{Volume: "/", Scratch: "/var/tmp", Partition: "none", Excludes: []string{"/var/big.bin"}}},
		Architecture: "x86_64", AgentBinary: agentPath, Manifest: bundle.ManifestConfig{User: "123456789012"},
		UserCert: cert, UserKey: userKey, ProgressInterval: 5 * time.Second})
	if err != nil {
		t.Fatalf("the next agent run: %v\nUI:\n%s", err, ui)
	}
	t.Cleanup(func() {
		if err := bucket.Delete(context.Background(), res.Objects); err != nil {
			t.Errorf("deleting the bundle: %v", err)
		}
	})
	out := ui.String()
	said := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "swept what a dead agent run left") {
			said = l
		}
	}
	t.Logf("the next run said: %s", said)
	if !strings.Contains(said, fmt.Sprintf("(pid %d,", marker.PID)) || !strings.Contains(said, "scratch "+marker.Dir) {
		t.Errorf("the next run did not say it swept the dead run %d and its scratch %s:\n%s", marker.PID, marker.Dir, out)
	}
	for _, m := range mountsLeft {
		if !strings.Contains(said, "mount "+m) {
			t.Errorf("the sweep does not name the mount %s: %s", m, said)
		}
	}
	for _, l := range loopsLeft {
		if !strings.Contains(said, "loop device /dev/"+l) {
			t.Errorf("the sweep does not name the loop device %s: %s", l, said)
		}
	}
	if i, j := strings.Index(out, "swept what a dead agent run left"), strings.Index(out, "imaging /"); i < 0 || j < 0 || i > j {
		t.Errorf("the sweep was not reported before the imaging started:\n%s", out)
	}

	// Nothing left of either run.
	if m := mountsUnder(sh("sed -n p /proc/self/mountinfo"), "/var/tmp"); len(m) != 0 {
		t.Errorf("mounts left under /var/tmp: %v", m)
	}
	if l := hostLoopsBacking(t, "/instancestore-run-"); len(l) != 0 {
		t.Errorf("loop devices left on the instance's scratch: %v", l)
	}
	if left := strings.TrimSpace(sh("sudo -n ls -A " + agent.StateDir)); left != "" {
		t.Errorf("left in %s: %s", agent.StateDir, left)
	}
	if left := sh("sudo -n ls -A /var/tmp /tmp"); strings.Contains(left, "instancestore") {
		t.Errorf("left on the instance:\n%s", left)
	}
	sh("sudo -n rm -rf " + agentDir + " /var/big.bin")
}

// blockReader never ends before ctx: the killed agent's stdin stays open, as the
// driver's does while it runs.
type blockReader struct{ ctx context.Context }

func (b blockReader) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, io.EOF
}

// launchInstance runs one instance of ami with a new key pair, waits until it runs
// and returns its address and key; cleanup terminates it (and waits) and deletes the
// key pair.
func launchInstance(t *testing.T, ctx context.Context, c *ec2.Client, ami string) (string, ssh.Signer) {
	t.Helper()
	kp, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("killed-" + randHex(4))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := c.DeleteKeyPair(context.Background(), &ec2.DeleteKeyPairInput{KeyName: kp.KeyName}); err != nil {
			t.Errorf("deleting key pair: %v", err)
		}
	})
	res, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: ec2types.InstanceTypeM3Medium,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: kp.KeyName})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(res.Instances[0].InstanceId)
	t.Cleanup(func() {
		if _, err := c.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Errorf("terminating %s: %v", id, err)
			return
		}
		w := ec2.NewInstanceTerminatedWaiter(c, func(o *ec2.InstanceTerminatedWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
		if err := w.Wait(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute); err != nil {
			t.Errorf("waiting for %s to terminate: %v", id, err)
		}
	})
	w := ec2.NewInstanceRunningWaiter(c, func(o *ec2.InstanceRunningWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
	d, err := w.WaitForOutput(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 3*time.Minute)
	if err != nil {
		t.Fatalf("waiting for %s to run: %v", id, err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(aws.ToString(kp.KeyMaterial)))
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(d.Reservations[0].Instances[0].PrivateIpAddress), signer
}

// waitForCopy finds the host PID of the process running exe (a path inside the
// instance, unique to the test) and waits until its mount table has the bind mount
// of the volume in a scratch work directory: the copy is starting. It returns the
// PID and that mount line.
func waitForCopy(t *testing.T, exe string) (int, string) {
	t.Helper()
	bindMount := regexp.MustCompile(` (/\S*/instancestore-run-\S+/instancestore-bundle-\S+/volume) `)
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			// The agent itself, not sudo (whose command line also names it).
			if err != nil || !bytes.HasPrefix(b, []byte(exe+"\x00agent")) {
				continue
			}
			var pid int
			fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
			mi, err := os.ReadFile(filepath.Join(filepath.Dir(p), "mountinfo"))
			if err != nil {
				continue
			}
			if m := bindMount.FindSubmatch(mi); m != nil {
				return pid, string(m[1])
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("the agent never started copying the volume")
	return 0, ""
}

// mountsUnder lists the mount points in a mountinfo table that lie under dir.
func mountsUnder(mountinfo, dir string) []string {
	var out []string
	for _, l := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// hostLoopsBacking lists the host's loop devices whose backing file path (as the host
// sees it: under the instance's root mount) contains part.
func hostLoopsBacking(t *testing.T, part string) []string {
	t.Helper()
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), part) {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}
