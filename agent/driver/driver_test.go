package driver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/instancestore/packer-plugin-instancestore/internal/cmdlines"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

func s3CreateBucket(name string) *s3.CreateBucketInput {
	return &s3.CreateBucketInput{Bucket: aws.String(name)}
}

// writeInstanceImage puts a sparse test image into the instance's filesystem and
// returns its path on the instance and its content.
func writeInstanceImage(t *testing.T, e *testEnv, size, random int64) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	// Incompressible data, a 10 MiB hole, then compressible data.
	if _, err := io.ReadFull(randReader{}, data[:random]); err != nil {
		t.Fatal(err)
	}
	hole := random + 10<<20
	for i := hole; i < size; i++ {
		data[i] = byte(i / 4096)
	}
	rel := "var/tmp/disk-" + randHex(4) + ".img"
	host := filepath.Join(e.inst.Root(), rel)
	os.MkdirAll(filepath.Dir(host), 0o755)
	f, err := os.Create(host)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(data[:random], 0)
	f.WriteAt(data[hole:], hole)
	f.Close()
	t.Cleanup(func() { os.Remove(host) })
	return "/" + rel, data
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return rand.Read(p) }

// ec2Source reads parts the way EC2 does: only objects whose ACL lets EC2 read.
type ec2Source struct {
	e      *testEnv
	prefix string
}

func (s ec2Source) OpenPart(name string) (io.ReadCloser, error) {
	return s.e.front.OpenAsEC2(context.Background(), s.e.bucket.Name, s.e.bucket.Key(name))
}

func baseConfig(e *testEnv, ui *recordingUi, image string) (Config, *x509.Certificate, *rsa.PrivateKey) {
	cert, key, err := bundle.NewThrowawayUser()
	if err != nil {
		panic(err)
	}
	return Config{
		Comm: e.comm, Ui: ui, Bucket: e.bucket,
		Job:              agent.Request{Mode: agent.ModeImage, Name: "image", Image: image, Concurrency: 3, StallSeconds: 3, ProgressMillis: 200},
		Architecture:     "x86_64",
		AgentBinary:      agentPath,
		Manifest:         bundle.ManifestConfig{User: "123456789012"},
		UserCert:         cert,
		UserKey:          key,
		ProgressInterval: time.Second,
	}, cert, key
}

// unbundleFromS3 reads the bundle back as EC2 would and returns the image bytes.
func unbundleFromS3(t *testing.T, e *testEnv, res *Result, priv *rsa.PrivateKey) []byte {
	t.Helper()
	data, err := e.front.GetAsEC2(e.bucket.Name, e.bucket.Key(res.Objects[len(res.Objects)-1]))
	if err != nil {
		t.Fatalf("EC2 cannot read the manifest: %v", err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.VerifySignature(&priv.PublicKey); err != nil {
		t.Fatalf("manifest signature: %v", err)
	}
	k, err := bundle.UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "restored.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := bundle.Unbundle(context.Background(), m, k, ec2Source{e: e}, out); err != nil {
		t.Fatalf("unbundling from S3 as EC2: %v", err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkNothingLeftOnInstance(t *testing.T, e *testEnv) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(e.inst.Root(), "tmp", "instancestore-agent.*"))
	if len(left) > 0 {
		t.Fatalf("left on the instance: %v", left)
	}
	// No agent process of this instance survives (other tests' instances may run
	// agents at the same time: look at this one's processes only).
	deadline := time.Now().Add(20 * time.Second)
	for {
		found := ""
		pids, err := e.inst.PIDs()
		if err != nil {
			t.Fatalf("listing the instance's processes: %v", err)
		}
		for _, pid := range pids {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(b, []byte("instancestore-bundler")) {
				found = string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			}
		}
		if found == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent still running: %s", found)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBundleImageOverSSH is the whole path: a non-root SSH user, sudo, a real sshd,
// MinIO checking the presigned URLs' signatures, EC2's view of the objects.
func TestBundleImageOverSSH(t *testing.T) {
	e := newTestEnv(t, "admin", s3env.Faults{})
	logs := captureLog(t)
	ui := newRecordingUi()
	image, data := writeInstanceImage(t, e, 30<<20, 12<<20)
	cfg, _, priv := baseConfig(e, ui, image)

	sampler := cmdlines.Sample()
	res, err := Run(context.Background(), cfg)
	seen := sampler.Stop()
	if err != nil {
		t.Fatalf("Run: %v\nUI:\n%s", err, ui)
	}
	if len(res.Bundle.Parts) < 2 {
		t.Fatalf("want a multi-part bundle, got %d parts", len(res.Bundle.Parts))
	}
	got := unbundleFromS3(t, e, res, priv)
	if !bytes.Equal(got, data) {
		t.Fatalf("the bundle in S3 does not decrypt to the image on the instance")
	}
	for _, name := range res.Objects {
		acl, ok := e.front.ACL(e.bucket.Name, e.bucket.Key(name))
		if !ok || acl != "aws-exec-read" {
			t.Errorf("object %s: ACL %q (known %v), want aws-exec-read", name, acl, ok)
		}
	}
	objs, _ := e.front.Objects(context.Background(), e.bucket.Name, "")
	if len(objs) != len(res.Objects) {
		t.Errorf("bucket holds %v, want exactly %v", objs, res.Objects)
	}
	if !strings.Contains(ui.String(), "uploaded") {
		t.Errorf("no progress in the UI:\n%s", ui)
	}
	checkNothingLeftOnInstance(t, e)
	checkNoSecrets(t, e, res, logs.String(), ui.String(), seen)
	t.Logf("UI:\n%s", ui)
}

// checkNoSecrets looks for the bundle key, the AWS secret, presigned signatures and
// the private key in the log, the UI and the command lines seen during the run.
func checkNoSecrets(t *testing.T, e *testEnv, res *Result, logText, uiText string, cmdlines []string) {
	t.Helper()
	if len(cmdlines) < 10 {
		t.Fatalf("only %d command lines sampled: the sampler did not run", len(cmdlines))
	}
	sawAgent := false
	for _, c := range cmdlines {
		if strings.Contains(c, "instancestore-bundler agent") {
			sawAgent = true
		}
	}
	if !sawAgent {
		t.Fatalf("the sampler never saw the agent's command line: it sampled too rarely to prove anything")
	}
	secrets := map[string]string{
		"AWS secret key":   minio.Credentials.SecretAccessKey,
		"X-Amz-Signature":  "X-Amz-Signature=",
		"X-Amz-Credential": "X-Amz-Credential=",
		"private key":      "PRIVATE KEY",
	}
	// The key and IV as the manifest wraps them are unknown here, but the agent never
	// prints them: search for any 32-hex-character run next to "key" instead is too
	// loose; the request is the only carrier and it travels on stdin.
	for what, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(logText, s) {
			t.Errorf("%s in the Packer log", what)
		}
		if strings.Contains(uiText, s) {
			t.Errorf("%s in the UI output", what)
		}
		for _, c := range cmdlines {
			if strings.Contains(c, s) {
				t.Errorf("%s on a command line: %q", what, c)
			}
		}
	}
	for _, c := range cmdlines {
		if strings.Contains(c, e.front.URL()+"/") || strings.Contains(c, "aws-exec-read") {
			t.Errorf("an S3 URL on a command line: %q", c)
		}
	}
	if !strings.Contains(logText, "starting remote command") {
		t.Fatalf("the captured log has no remote commands: log capture is broken")
	}
}

// TestFaultyS3 fails 10% of the S3 requests at random (500, 503, SlowDown, resets,
// stalls): the bundle still completes and decrypts to the same image.
func TestFaultyS3(t *testing.T) {
	e := newTestEnv(t, "admin", s3env.Faults{})
	ui := newRecordingUi()
	image, data := writeInstanceImage(t, e, 100<<20, 80<<20)
	// Every request may fail: the agent's part PUTs and the plugin's own (manifest,
	// checks), which go through the SDK's retryer.
	e.front.SetFaults(s3env.Faults{Rate: 0.1, Seed: faultySeed(t, 8), Stall: 8 * time.Second})
	cfg, _, priv := baseConfig(e, ui, image)
	cfg.Job.Attempts = 30
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\nUI:\n%s", err, ui)
	}
	got := unbundleFromS3(t, e, res, priv)
	if !bytes.Equal(got, data) {
		t.Fatal("the bundle does not decrypt to the image")
	}
	counts := e.front.FaultCounts()
	total := 0
	for _, n := range counts {
		total += n
	}
	t.Logf("faults injected: %v", counts)
	if total == 0 {
		t.Fatal("no fault was injected: the test proves nothing")
	}
	if !strings.Contains(ui.String(), "retrying upload") {
		t.Errorf("retries not shown in the UI:\n%s", ui)
	}
	objs, _ := e.front.Objects(context.Background(), e.bucket.Name, "")
	if len(objs) != len(res.Objects) {
		t.Errorf("bucket holds %d objects, want %d", len(objs), len(res.Objects))
	}
	checkNothingLeftOnInstance(t, e)
}

// TestConnectionCut drops the SSH connection while parts are uploading: Run fails
// with a clear error, and neither the instance nor S3 keeps anything.
func TestConnectionCut(t *testing.T) {
	e := newTestEnv(t, "admin", s3env.Faults{})
	ui := newRecordingUi()
	image, _ := writeInstanceImage(t, e, 160<<20, 140<<20)
	cfg, _, _ := baseConfig(e, ui, image)
	cfg.Job.Concurrency = 1
	cut := make(chan struct{})
	go func() {
		for range 600 {
			puts := 0
			for _, r := range e.front.Requests() {
				if r.Method == http.MethodPut && strings.Contains(r.Key, ".part.") && r.Status == 200 {
					puts++
				}
			}
			if puts >= 2 {
				e.cut()
				close(cut)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, err := Run(context.Background(), cfg)
	select {
	case <-cut:
	default:
		t.Fatalf("the connection was never cut (Run: %v)", err)
	}
	if err == nil {
		t.Fatal("Run succeeded although the connection was cut")
	}
	if !strings.Contains(err.Error(), "connection") {
		t.Errorf("error does not say the connection was lost: %v", err)
	}
	t.Logf("error: %v", err)
	checkNothingLeftOnInstance(t, e)
	// The agent may have had PUTs in flight: give them the time they would take.
	time.Sleep(3 * time.Second)
	objs, _ := e.front.Objects(context.Background(), e.bucket.Name, "")
	if len(objs) != 0 {
		t.Fatalf("left in S3: %v", objs)
	}
}

// faultySeed picks a seed for the Front's fault sequence (a PCG seeded as s3env seeds
// it) whose first n decisions fail at least two requests, one of them by breaking the
// connection (reset or stall) and one with an S3 error, so that a 10% fault rate
// surely shows on a bundle of a few parts.
func faultySeed(t *testing.T, n int) int64 {
	kinds := s3env.AllFaults
	for seed := int64(1); seed < 100000; seed++ {
		rng := mrand.New(mrand.NewPCG(uint64(seed), uint64(seed)^0x5bd1e995))
		var net, s3err int
		for range n {
			if rng.Float64() >= 0.1 {
				continue
			}
			switch kinds[rng.IntN(len(kinds))] {
			case s3env.FaultReset, s3env.FaultStall:
				net++
			default:
				s3err++
			}
		}
		if net > 0 && s3err > 0 {
			return seed
		}
	}
	t.Fatal("no seed found")
	return 0
}

// TestRootUserAndBadExecuteCommand: as root no sudo is used; an execute_command that
// cannot start the agent gives an error naming execute_command, and the agent's
// directory is still removed.
func TestRootUserAndBadExecuteCommand(t *testing.T) {
	e := newTestEnv(t, "root", s3env.Faults{})
	logs := captureLog(t)
	ui := newRecordingUi()
	image, data := writeInstanceImage(t, e, 20<<20, 4<<20)
	cfg, _, priv := baseConfig(e, ui, image)
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run as root: %v\n%s", err, ui)
	}
	if got := unbundleFromS3(t, e, res, priv); !bytes.Equal(got, data) {
		t.Fatal("the bundle does not decrypt to the image")
	}
	if strings.Contains(logs.String(), "sudo") {
		t.Errorf("sudo used for the root user:\n%s", logs)
	}
	checkNothingLeftOnInstance(t, e)

	cfg, _, _ = baseConfig(e, ui, image)
	cfg.Job.Name = "second"
	cfg.ExecuteCommand = "exit 3; {{.Path}} {{.Args}}"
	_, err = Run(context.Background(), cfg)
	// The driver names no component's option: the provisioner adds execute_command.
	if !errors.Is(err, ErrAgentDidNotStart) || !strings.Contains(err.Error(), "must run as root") || strings.Contains(err.Error(), "execute_command") {
		t.Fatalf("want ErrAgentDidNotStart explained without option names, got %v", err)
	}
	checkNothingLeftOnInstance(t, e)
}
