package driver

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// localComm is a packersdk.Communicator that runs commands on this machine with
// sh -c: the driver's protocol handling without SSH, for fast tests.
type localComm struct {
	mu       sync.Mutex
	commands []string
}

func (c *localComm) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	c.mu.Lock()
	c.commands = append(c.commands, rc.Command)
	c.mu.Unlock()
	cmd := exec.Command("sh", "-c", rc.Command)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = rc.Stdin, rc.Stdout, rc.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		err := cmd.Wait()
		status := 0
		if ee, ok := err.(*exec.ExitError); ok {
			status = ee.ExitCode()
		} else if err != nil {
			status = 1
		}
		rc.SetExited(status)
	}()
	return nil
}

func (c *localComm) Upload(dst string, r io.Reader, _ *os.FileInfo) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (c *localComm) UploadDir(string, string, []string) error   { return nil }
func (c *localComm) Download(string, io.Writer) error           { return nil }
func (c *localComm) DownloadDir(string, string, []string) error { return nil }

var (
	localAgentOnce sync.Once
	localAgent     string
	localAgentErr  error
)

func buildLocalAgent(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux only")
	}
	localAgentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "driver-local-agent-")
		if err != nil {
			localAgentErr = err
			return
		}
		localAgent = filepath.Join(dir, "instancestore-bundler")
		cmd := exec.Command("go", "build", "-o", localAgent, "github.com/instancestore/packer-plugin-instancestore/cmd/instancestore-bundler")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			localAgentErr = err
			t.Logf("%s", out)
		}
	})
	if localAgentErr != nil {
		t.Fatal(localAgentErr)
	}
	return localAgent
}

func gofakes3Bucket(t *testing.T) (*s3env.Front, *s3bundle.Bucket) {
	t.Helper()
	b, err := s3env.StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	f, err := s3env.NewFront(b, s3env.FrontOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Client("us-east-1").CreateBucket(context.Background(), s3CreateBucket("local-bundles")); err != nil {
		t.Fatal(err)
	}
	cfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(f.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(b.Credentials.AccessKeyID, b.Credentials.SecretAccessKey, "")}
	bk, err := s3bundle.New(cfg, "us-east-1", "local-bundles", "p", s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return f, bk
}

// TestLocalRun drives the agent on this machine through a local communicator.
func TestLocalRun(t *testing.T) {
	agentBin := buildLocalAgent(t)
	front, bk := gofakes3Bucket(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := bytes.Repeat([]byte("instancestore "), 2<<20) // 28 MiB, compressible
	os.WriteFile(img, data, 0o644)
	remote := filepath.Join(dir, "remote")
	os.Mkdir(remote, 0o755)

	comm := &localComm{}
	ui := newRecordingUi()
	cert, priv, _ := bundle.NewThrowawayUser()
	res, err := Run(context.Background(), Config{
		Comm: comm, Ui: ui, Bucket: bk, AgentBinary: agentBin, RemoteFolder: remote,
		Job:      agent.Request{Mode: agent.ModeImage, Name: "disk", Image: img},
		Manifest: bundle.ManifestConfig{User: "123456789012"}, UserCert: cert, UserKey: priv,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, ui)
	}
	if res.ManifestLocation != "local-bundles/p/disk.manifest.xml" || res.Objects[len(res.Objects)-1] != "disk.manifest.xml" {
		t.Fatalf("result %+v", res)
	}
	for _, o := range res.Objects {
		if acl, _ := front.ACL("local-bundles", "p/"+o); acl != "aws-exec-read" {
			t.Errorf("%s: ACL %q", o, acl)
		}
	}
	if left, _ := os.ReadDir(remote); len(left) != 0 {
		t.Errorf("left in remote_folder: %v", left)
	}
	for _, c := range comm.commands {
		if strings.Contains(c, bk.Name+"/p/") || strings.Contains(c, "X-Amz") {
			t.Errorf("command line with S3 details: %q", c)
		}
	}
	// A second run with the same bundle name must not overwrite the first.
	_, err = Run(context.Background(), Config{Comm: comm, Ui: ui, Bucket: bk, AgentBinary: agentBin, RemoteFolder: remote,
		Job: agent.Request{Mode: agent.ModeImage, Name: "disk", Image: img}, Manifest: bundle.ManifestConfig{User: "123456789012"}})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second run into the same name: %v", err)
	}
}

// TestLocalAgentFailure: the agent fails (missing image): the error is the agent's,
// and nothing stays behind.
func TestLocalAgentFailure(t *testing.T) {
	agentBin := buildLocalAgent(t)
	front, bk := gofakes3Bucket(t)
	remote := t.TempDir()
	ui := newRecordingUi()
	_, err := Run(context.Background(), Config{
		Comm: &localComm{}, Ui: ui, Bucket: bk, AgentBinary: agentBin, RemoteFolder: remote,
		Job:      agent.Request{Mode: agent.ModeImage, Name: "disk", Image: "/nonexistent/disk.img"},
		Manifest: bundle.ManifestConfig{User: "123456789012"},
	})
	if err == nil || !strings.Contains(err.Error(), "the agent on the instance failed") || !strings.Contains(err.Error(), "/nonexistent/disk.img") {
		t.Fatalf("want the agent's error naming the image, got %v", err)
	}
	if left, _ := os.ReadDir(remote); len(left) != 0 {
		t.Errorf("left in remote_folder: %v", left)
	}
	if objs, _ := front.Objects(context.Background(), "local-bundles", ""); len(objs) != 0 {
		t.Errorf("left in S3: %v", objs)
	}
}

// TestLocalCancel cancels the run mid-upload: the agent stops and everything goes.
func TestLocalCancel(t *testing.T) {
	agentBin := buildLocalAgent(t)
	front, bk := gofakes3Bucket(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	rnd := make([]byte, 60<<20)
	io.ReadFull(randReader{}, rnd)
	os.WriteFile(img, rnd, 0o644)
	remote := filepath.Join(dir, "remote")
	os.Mkdir(remote, 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ui := newRecordingUi()
	ui.say = func(s string) {
		if strings.HasPrefix(s, "Running the agent") {
			go func() {
				for {
					if objs, _ := front.Objects(context.Background(), "local-bundles", ""); len(objs) > 0 {
						cancel()
						return
					}
				}
			}()
		}
	}
	_, err := Run(ctx, Config{
		Comm: &localComm{}, Ui: ui, Bucket: bk, AgentBinary: agentBin, RemoteFolder: remote,
		Job:      agent.Request{Mode: agent.ModeImage, Name: "disk", Image: img, Concurrency: 1},
		Manifest: bundle.ManifestConfig{User: "123456789012"},
	})
	if err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("want a cancellation error, got %v", err)
	}
	if left, _ := os.ReadDir(remote); len(left) != 0 {
		t.Errorf("left in remote_folder: %v", left)
	}
	if objs, _ := front.Objects(context.Background(), "local-bundles", ""); len(objs) != 0 {
		t.Errorf("left in S3: %v", objs)
	}
}
