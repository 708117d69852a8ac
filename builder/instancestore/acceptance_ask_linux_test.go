//go:build linux

package instancestore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// askPrompt is what Packer's -on-error=ask asks after a failed step.
const askPrompt = "[c] Clean up and exit, [a] abort without cleanup, or [r] retry step"

// TestAcceptanceAskRetry runs the local build with -on-error=ask in a terminal (Packer
// reads the answer from its TTY, /dev/tty, never from stdin: without a terminal Ask
// fails with "no available tty" and the build cleans up). Every part PUT of the first
// bundle attempt is refused with 403 AccessDenied, as a bucket policy that denies
// writes answers: the bundle step fails, Packer asks, the test lifts the denial and
// answers "r". The retry must run the step again cleanly: the build succeeds, the
// bucket holds exactly one bundle under the prefix (one manifest, and exactly the
// parts it lists), the AMI registers from it (the simulator decrypts and checks every
// part), and nothing else is left.
func TestAcceptanceAskRetry(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	outDir := t.TempDir()
	bucket := "acc-ask"
	dir := filepath.Join(a.Root, "example", "local")
	if out, err := a.run(t, dir, a.envList(), "init", "."); err != nil {
		t.Fatalf("packer init: %v\n%s", err, out)
	}
	front := a.local.S3Front
	front.SetFaults(s3env.Faults{Rate: 1, Kinds: []s3env.FaultKind{s3env.FaultAccessDenied}, Match: func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/"+bucket+"/") && strings.Contains(r.URL.Path, ".part.")
	}})
	t.Cleanup(func() { front.SetFaults(s3env.Faults{}) })

	master, tty, err := openPTY()
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	defer master.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, a.Bin, "build", "-color=false", "-on-error=ask",
		"-var", "output_dir="+outDir, "-var", "s3_bucket="+bucket, ".")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), a.Env...), a.envList("PACKER_LOG=1", "PACKER_LOG_PATH="+filepath.Join(outDir, "packer.log"))...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	// A session of its own with the terminal as its controlling TTY, in the
	// foreground: what Packer needs to open /dev/tty and ask.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()

	var (
		mu      sync.Mutex
		out     strings.Builder
		prompts int
		denied  int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		seen := 0 // output already searched for the prompt
		for {
			n, err := master.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			s := out.String()
			if i := strings.Index(s[seen:], askPrompt); i >= 0 {
				seen += i + len(askPrompt)
				prompts++
				answer := "r\r"
				if prompts == 1 {
					denied = front.FaultCounts()[s3env.FaultAccessDenied]
					front.SetFaults(s3env.Faults{}) // the policy is fixed: retry
				} else {
					answer = "c\r" // a second failure: clean up and exit
				}
				t.Logf("packer asks (%d); answering %q", prompts, strings.TrimSpace(answer))
				master.Write([]byte(answer))
			}
			mu.Unlock()
			if err != nil { // EIO once packer and its children closed the terminal
				return
			}
		}
	}()
	werr := cmd.Wait()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	mu.Lock()
	output := strings.ReplaceAll(out.String(), "\r\n", "\n")
	mu.Unlock()
	if prompts == 0 {
		a.failWithLog(t, outDir, output, fmt.Errorf("packer never asked (exit: %v)", werr))
	}
	if prompts != 1 || werr != nil {
		a.failWithLog(t, outDir, output, fmt.Errorf("after %d prompts: %v", prompts, werr))
	}
	t.Logf("packer build output:\n%s", output)
	if denied == 0 {
		t.Fatal("no part PUT was denied: the first attempt did not fail where the test meant it to")
	}
	if !strings.Contains(output, "AccessDenied") || !strings.Contains(output, `Step "stepBundle" failed`) {
		t.Errorf("the output does not show the bundle step failing on the denied PUT")
	}
	if strings.Contains(output, "Provisioning step had errors") {
		t.Errorf("after the retry passed, the cleanups acted as after an error (the error-cleanup-provisioner would run)")
	}

	data, err := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pm struct {
		Builds []struct {
			ArtifactID string            `json:"artifact_id"`
			CustomData map[string]string `json:"custom_data"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(data, &pm); err != nil || len(pm.Builds) != 1 {
		t.Fatalf("packer-manifest.json: %v\n%s", err, data)
	}
	_, amiID, _ := strings.Cut(pm.Builds[0].ArtifactID, ":")
	loc := strings.TrimPrefix(pm.Builds[0].CustomData["bundle_manifest"], "s3://")
	_, manifestKey, _ := strings.Cut(loc, "/")
	prefix := manifestKey[:strings.LastIndex(manifestKey, "/")+1]

	// One bundle under the prefix: the manifest and exactly its parts.
	mo, err := a.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(manifestKey)})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := io.ReadAll(mo.Body)
	mo.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.ParseManifest(mb)
	if err != nil {
		t.Fatalf("the manifest: %v", err)
	}
	want := []string{manifestKey}
	for _, p := range m.Parts {
		want = append(want, prefix+p.Filename)
	}
	var got []string
	lo, err := a.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range lo.Contents {
		got = append(got, aws.ToString(o.Key))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("under %s the bucket holds\n%s\nwant the manifest and its %d parts\n%s", prefix, strings.Join(got, "\n"), len(m.Parts), strings.Join(want, "\n"))
	}

	// The AMI registered from it: the simulator read and decrypted every part.
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{amiID}})
	if err != nil || len(imgs.Images) != 1 || imgs.Images[0].State != ec2types.ImageStateAvailable || aws.ToString(imgs.Images[0].ImageLocation) != loc {
		t.Fatalf("AMI %s: %v %+v", amiID, err, imgs)
	}

	a.checkLeftovers(t, bucket, loc)
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(amiID)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
}

// openPTY opens a pseudo-terminal pair: the master side for the test, the terminal
// for the child.
func openPTY() (master, tty *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			master.Close()
		}
	}()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return nil, nil, fmt.Errorf("unlocking the terminal: %w", err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		return nil, nil, fmt.Errorf("finding the terminal's number: %w", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	return master, tty, nil
}
