// Package packertest drives the real Packer binary from tests: the pinned Packer that
// scripts/build-tools.sh builds, with this repository's plugin built and installed
// into a private plugin directory (as users install a local build, `packer plugins
// install --path`); `packer build` runs that can be interrupted with SIGINT at a line
// of the output, as a terminal's Ctrl-C does; and the check that a build left nothing
// in EC2.
package packertest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Packer is a Packer binary with the plugin installed where only it looks.
type Packer struct {
	Root   string   // the repository root
	Bin    string   // the packer binary
	Plugin string   // the plugin binary that was installed
	Env    []string // PACKER_PLUGIN_PATH, PACKER_CONFIG_DIR, ...: append to os.Environ()
	dir    string
}

var (
	once   sync.Once
	shared *Packer
	errSet error
)

// RepoRoot is the module root: the nearest directory above the working directory
// (a package directory under test) holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("packertest: no go.mod above the working directory")
		}
		dir = up
	}
}

// ReleaseLdflags make a build of the plugin report a release version (no -dev), so
// that `packer init` finds the installed plugin satisfies `version = ">= 0.1.0"`:
// Packer refuses pre-release constraints and ignores -dev builds for them.
const ReleaseLdflags = "-X github.com/instancestore/packer-plugin-instancestore/version.VersionPrerelease="

// Setup builds Packer (scripts/build-tools.sh, cached in bin/) and the real plugin
// (the repository's main package, a static linux build with a release version so
// that `required_plugins` constraints such as ">= 0.1.0" take it; it doubles as the
// agent), and installs the plugin into a private directory. It runs once per test
// binary; Cleanup removes the directory (call it from TestMain, or leave it to the
// temporary directory's owner).
func Setup(t testing.TB) *Packer {
	t.Helper()
	root := RepoRoot(t)
	once.Do(func() { shared, errSet = setup(root) })
	if errSet != nil {
		t.Fatal(errSet)
	}
	return shared
}

// Cleanup removes what Setup made (the plugin and its directories).
func Cleanup() {
	if shared != nil {
		os.RemoveAll(shared.dir)
	}
}

func setup(root string) (*Packer, error) {
	run := func(env []string, name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run(nil, filepath.Join(root, "scripts", "build-tools.sh")); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "instancestore-packertest-")
	if err != nil {
		return nil, err
	}
	p := &Packer{Root: root, Bin: filepath.Join(root, "bin", "packer"), Plugin: filepath.Join(dir, "build", "packer-plugin-instancestore"), dir: dir,
		Env: []string{
			"PACKER_PLUGIN_PATH=" + filepath.Join(dir, "plugins"),
			"PACKER_CONFIG_DIR=" + filepath.Join(dir, "config"),
			"PACKER_CACHE_DIR=" + filepath.Join(dir, "cache"),
			"CHECKPOINT_DISABLE=1",
			"PACKER_NO_COLOR=1",
		}}
	if b := os.Getenv("INSTANCESTORE_TEST_PACKER"); b != "" {
		p.Bin = b
	}
	if err := run([]string{"CGO_ENABLED=0"}, "go", "build", "-ldflags", ReleaseLdflags, "-o", p.Plugin, "."); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := run(p.Env, p.Bin, "plugins", "install", "--path", p.Plugin, "github.com/instancestore/instancestore"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// Run runs packer with args in dir (os.Environ, then p.Env, then env) and returns its
// combined output.
func (p *Packer) Run(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, p.Bin, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), p.Env...), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// BuildResult is what one `packer build` did.
type BuildResult struct {
	Output      string // stdout and stderr, as they came
	Err         error  // the exit error
	Interrupted bool   // SIGINT was sent
	// InterruptedAt is the output line that triggered SIGINT.
	InterruptedAt string
}

// Build runs `packer build -color=false args...` in dir. When cancelAt is not empty,
// SIGINT goes to packer's process group as soon as a line of its output contains it,
// as a terminal's Ctrl-C does (packer runs itself under a wrapper process, so it gets
// a group of its own and the signal goes to the group).
func (p *Packer) Build(ctx context.Context, t testing.TB, dir string, env []string, cancelAt string, args ...string) BuildResult {
	t.Helper()
	cmd := exec.CommandContext(ctx, p.Bin, append([]string{"build", "-color=false"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), p.Env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var res BuildResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			if cancelAt != "" && !res.Interrupted && strings.Contains(line, cancelAt) {
				res.Interrupted, res.InterruptedAt = true, line
				t.Logf("sending SIGINT to packer at %q", line)
				syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	res.Err = cmd.Wait()
	pw.Close()
	<-done
	res.Output = out.String()
	return res
}

// Keep names what a finished build may leave in EC2: what it made and what the
// test made before it. AMIs of other owners (the environment's seeded base AMIs,
// owner alias amazon) are never counted.
type Keep struct {
	AMIs      map[string]bool // the account's image ids that may stay
	Snapshots map[string]bool // the account's snapshot ids that may stay
}

// LeftInEC2 lists what a build must not leave: instances that are not terminated
// (it waits up to two minutes for those shutting down), volumes, snapshots and AMIs
// of the account not in keep, key pairs and security groups other than the default.
func LeftInEC2(ctx context.Context, c *ec2.Client, keep Keep) ([]string, error) {
	var left []string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		di, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		if err != nil {
			return nil, err
		}
		var alive []string
		for _, r := range di.Reservations {
			for _, in := range r.Instances {
				if in.State.Name != ec2types.InstanceStateNameTerminated {
					alive = append(alive, fmt.Sprintf("instance %s (%s)", aws.ToString(in.InstanceId), in.State.Name))
				}
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			left = append(left, alive...)
			break
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	dv, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil {
		return nil, err
	}
	for _, v := range dv.Volumes {
		left = append(left, fmt.Sprintf("volume %s (%s)", aws.ToString(v.VolumeId), v.State))
	}
	ds, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		return nil, err
	}
	for _, s := range ds.Snapshots {
		if !keep.Snapshots[aws.ToString(s.SnapshotId)] {
			left = append(left, fmt.Sprintf("snapshot %s (%s)", aws.ToString(s.SnapshotId), aws.ToString(s.Description)))
		}
	}
	dimg, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		return nil, err
	}
	for _, im := range dimg.Images {
		if !keep.AMIs[aws.ToString(im.ImageId)] {
			left = append(left, fmt.Sprintf("AMI %s (%s, %s)", aws.ToString(im.ImageId), aws.ToString(im.Name), im.RootDeviceType))
		}
	}
	dk, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil {
		return nil, err
	}
	for _, k := range dk.KeyPairs {
		left = append(left, "key pair "+aws.ToString(k.KeyName))
	}
	dg, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		return nil, err
	}
	for _, g := range dg.SecurityGroups {
		if aws.ToString(g.GroupName) != "default" {
			left = append(left, fmt.Sprintf("security group %s (%s)", aws.ToString(g.GroupId), aws.ToString(g.GroupName)))
		}
	}
	sort.Strings(left)
	return left, nil
}

// Tail is the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
