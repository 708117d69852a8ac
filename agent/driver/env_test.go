package driver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	sshcomm "github.com/hashicorp/packer-plugin-sdk/sdk-internals/communicator/ssh"
	"golang.org/x/crypto/ssh"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// The environment of the driver tests: one lite root, one agent binary and one MinIO,
// shared by the tests of this package; an instance and an S3 front per test.
var (
	envOnce   sync.Once
	envErr    error
	envDir    string
	liteRoot  string
	agentPath string
	minio     *s3env.Backend
)

func TestMain(m *testing.M) {
	code := m.Run()
	if minio != nil {
		minio.Close()
	}
	if envDir != "" {
		os.RemoveAll(envDir)
	}
	os.Exit(code)
}

func sharedEnv(t *testing.T) {
	t.Helper()
	testroot.Require(t)
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // MinIO may be built first (minutes)
		defer cancel()
		if envDir, envErr = os.MkdirTemp("", "driver-test-"); envErr != nil {
			return
		}
		liteRoot = filepath.Join(envDir, "root")
		if envErr = instance.BuildLiteRoot(ctx, liteRoot); envErr != nil {
			envErr = fmt.Errorf("BuildLiteRoot: %w", envErr)
			return
		}
		agentPath = filepath.Join(envDir, "instancestore-bundler")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", agentPath, "github.com/instancestore/packer-plugin-instancestore/cmd/instancestore-bundler")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			envErr = fmt.Errorf("building the agent: %v: %s", err, out)
			return
		}
		if minio, envErr = s3env.StartMinIO(ctx, filepath.Join(envDir, "minio"), s3env.Credentials{}); envErr != nil {
			envErr = fmt.Errorf("StartMinIO: %w", envErr)
			return
		}
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
}

// testEnv is one instance, reachable over a real SSH connection through Packer's SSH
// communicator, and one S3 front reachable from it.
type testEnv struct {
	inst   *instance.Instance
	front  *s3env.Front
	comm   packersdk.Communicator
	bucket *s3bundle.Bucket
	region string

	connMu sync.Mutex
	conns  []net.Conn // connections the communicator made, to cut them
}

func newTestEnv(t *testing.T, user string, faults s3env.Faults) *testEnv {
	t.Helper()
	sharedEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	sshPub, _ := ssh.NewPublicKey(pub)
	inst, err := instance.Start(ctx, instance.Config{Root: liteRoot,
		AuthorizedKeys: map[string]string{user: string(ssh.MarshalAuthorizedKey(sshPub))}})
	if err != nil {
		t.Fatalf("starting the instance: %v", err)
	}
	t.Cleanup(func() { inst.Stop() })

	front, err := s3env.NewFront(minio, s3env.FrontOptions{Listen: inst.HostAddr().String() + ":0", Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })

	e := &testEnv{inst: inst, front: front, region: "us-east-1"}
	e.comm, err = sshcomm.New(inst.SSHAddr(), &sshcomm.Config{
		SSHConfig: &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.FixedHostKey(inst.HostKey()), Timeout: 30 * time.Second},
		Connection: func() (net.Conn, error) {
			c, err := net.DialTimeout("tcp", inst.SSHAddr(), 30*time.Second)
			if err == nil {
				e.connMu.Lock()
				e.conns = append(e.conns, c)
				e.connMu.Unlock()
			}
			return c, err
		},
		HandshakeTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatalf("connecting over SSH: %v", err)
	}

	name := "bkt-" + strings.ToLower(randHex(6))
	if _, err := front.Client(e.region).CreateBucket(ctx, s3CreateBucket(name)); err != nil {
		t.Fatalf("creating bucket: %v", err)
	}
	e.bucket, err = s3bundle.New(e.awsConfig(), e.region, name, "builds/one", s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *testEnv) awsConfig() aws.Config {
	c := minio.Credentials
	return aws.Config{
		Region:       e.region,
		BaseEndpoint: aws.String(e.front.URL()),
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
		// As max_retries does for users: enough that a 10% fault rate never exhausts it.
		RetryMaxAttempts: 10,
		HTTPClient:       &http.Client{Timeout: 20 * time.Second},
	}
}

// cut closes every SSH connection the communicator made: the network dropping.
func (e *testEnv) cut() {
	e.connMu.Lock()
	defer e.connMu.Unlock()
	for _, c := range e.conns {
		c.Close()
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// recordingUi is a packersdk.Ui that keeps everything said, filtered the way Packer's
// UI filters secrets.
type recordingUi struct {
	packersdk.BasicUi
	mu  sync.Mutex
	buf bytes.Buffer
	say func(string) // optional hook
}

func newRecordingUi() *recordingUi {
	u := &recordingUi{}
	u.BasicUi = packersdk.BasicUi{Reader: strings.NewReader(""), Writer: &u.buf, ErrorWriter: &u.buf}
	return u
}

func (u *recordingUi) Say(s string) {
	u.mu.Lock()
	u.BasicUi.Say(s)
	u.mu.Unlock()
	if u.say != nil {
		u.say(s)
	}
}
func (u *recordingUi) Sayf(f string, a ...any) { u.Say(fmt.Sprintf(f, a...)) }
func (u *recordingUi) Error(s string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.BasicUi.Error(s)
}
func (u *recordingUi) String() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.buf.String()
}

// captureLog sends the standard logger (Packer's log) through the secret filter into
// a buffer for the rest of the test, as Packer does with PACKER_LOG=1.
func captureLog(t *testing.T) *syncBuffer {
	b := &syncBuffer{}
	packersdk.LogSecretFilter.SetOutput(b)
	log.SetOutput(&packersdk.LogSecretFilter)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	return b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
