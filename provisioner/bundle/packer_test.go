package bundle

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"github.com/instancestore/packer-plugin-instancestore/internal/cmdlines"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/crypto/ssh"

	format "github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// repoRoot is the module root, two levels up from this package.
func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// packerBin finds Packer: $PACKER_BIN, else bin/packer built by scripts/build-tools.sh.
func packerBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PACKER_BIN"); p != "" {
		return p
	}
	root := repoRoot(t)
	cmd := exec.Command(filepath.Join(root, "scripts", "build-tools.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building Packer with scripts/build-tools.sh: %v: %s", err, out)
	}
	return filepath.Join(root, "bin", "packer")
}

// TestPackerBuild runs `packer build` with the null builder against an instance
// served by a real sshd, and the provisioner bundling an image file on it to MinIO.
// The test plugin binary (testdata/plugin) doubles as the agent, as a plain `go
// build` of the real plugin does on linux/amd64. It checks the bundle in S3 against
// the image, the ACLs, and that no secret reaches Packer's log, its output or any
// command line.
func TestPackerBuild(t *testing.T) {
	testroot.Acceptance(t)
	testroot.Require(t)
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the test plugin serves as the agent only on linux/amd64")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute) // Packer and MinIO may be built first
	defer cancel()
	dir := t.TempDir()
	packer, env := installPlugin(t, dir)

	// The instance and S3.
	root := filepath.Join(dir, "root")
	if err := instance.BuildLiteRoot(ctx, root); err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	inst, err := instance.Start(ctx, instance.Config{Root: root,
		AuthorizedKeys: map[string]string{"admin": string(ssh.MarshalAuthorizedKey(sshPub))}})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	pemKey, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	os.WriteFile(keyFile, pem.EncodeToMemory(pemKey), 0o600)

	backend, err := s3env.StartMinIO(ctx, filepath.Join(dir, "minio"), s3env.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	front, err := s3env.NewFront(backend, s3env.FrontOptions{Listen: inst.HostAddr().String() + ":0"})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	bucket := "packer-test-bundles"
	if _, err := front.Client("us-east-1").CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}

	// EC2: the simulator registers instance-store AMIs by reading the bundle from S3
	// as EC2's principal and decrypting it with its own "EC2" key.
	sim, err := ec2sim.Start(ec2sim.Config{DataDir: filepath.Join(dir, "ec2sim"),
		Credentials: ec2sim.Credentials{AccessKeyID: backend.Credentials.AccessKeyID, SecretAccessKey: backend.Credentials.SecretAccessKey},
		S3:          ec2sim.FrontReader{Front: front}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()

	// The image on the instance, and the user's X.509 pair on the host.
	image := make([]byte, 23<<20+777)
	io.ReadFull(rand.Reader, image[:9<<20])
	for i := 16 << 20; i < len(image); i++ {
		image[i] = byte(i >> 12)
	}
	os.MkdirAll(filepath.Join(root, "var/tmp"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "var/tmp/disk.img"), image, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, userKey, err := format.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyPEMFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "pk.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)
	os.WriteFile(keyPEMFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(userKey)}), 0o600)

	template := fmt.Sprintf(`
source "null" "inst" {
  ssh_host             = %q
  ssh_username         = "admin"
  ssh_private_key_file = %q
}

build {
  sources = ["source.null.inst"]

  provisioner "instancestore-bundle" {
    region                     = "us-east-1"
    skip_credential_validation = true
    skip_metadata_api_check    = true
    s3_bucket                  = %q
    s3_prefix                  = "builds/packer"
    s3_force_path_style        = true
    bundle_prefix              = "disk"
    bundle_image               = "/var/tmp/disk.img"
    account_id                 = "1234-5678-9012"
    x509_cert_path             = %q
    x509_key_path              = %q
    progress_interval          = "1s"
    ec2_cert_path              = %q
    ami_name                   = "bundled-by-packer"
    ami_description            = "from the instancestore-bundle test"
  }
}
`, inst.Addr().String(), keyFile, bucket, certFile, keyPEMFile, sim.EC2CertPath())
	tpl := filepath.Join(dir, "bundle.pkr.hcl")
	os.WriteFile(tpl, []byte(template), 0o644)

	validate := exec.CommandContext(ctx, packer, "validate", tpl)
	validate.Env = env
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("packer validate: %v: %s", err, out)
	}

	logFile := filepath.Join(dir, "packer.log")
	cmd := exec.CommandContext(ctx, packer, "build", "-color=false", tpl)
	cmd.Env = append(env, "PACKER_LOG=1", "PACKER_LOG_PATH="+logFile,
		"AWS_ACCESS_KEY_ID="+backend.Credentials.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+backend.Credentials.SecretAccessKey,
		"AWS_ENDPOINT_URL_S3="+front.URL(), "AWS_ENDPOINT_URL_EC2="+sim.URL(), "AWS_EC2_METADATA_DISABLED=true")
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	samples := cmdlines.Sample()
	err = cmd.Run()
	seenCmdlines := samples.Stop()
	logText, _ := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("packer build: %v\n%s\nlog:\n%s", err, stdout.String(), tail(string(logText), 6000))
	}
	out := stdout.String()
	t.Logf("packer build output:\n%s", out)
	if !strings.Contains(out, "Manifest: "+bucket+"/builds/packer/disk.manifest.xml") {
		t.Fatalf("no manifest location in the output")
	}
	// The AMI exists in EC2, registered from this manifest.
	ec2c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(sim.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(backend.Credentials.AccessKeyID, backend.Credentials.SecretAccessKey, "")})
	imgs, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, im := range imgs.Images {
		if aws.ToString(im.Name) == "bundled-by-packer" {
			found = true
			if aws.ToString(im.ImageLocation) != bucket+"/builds/packer/disk.manifest.xml" {
				t.Errorf("AMI image location %q", aws.ToString(im.ImageLocation))
			}
			if !strings.Contains(out, "Registered AMI "+aws.ToString(im.ImageId)) {
				t.Errorf("the output does not name %s", aws.ToString(im.ImageId))
			}
		}
	}
	if !found {
		t.Fatalf("no AMI named bundled-by-packer in %+v", imgs.Images)
	}

	// The bundle as EC2 sees it, decrypted with the user's key, is the image.
	m, err := front.GetAsEC2(bucket, "builds/packer/disk.manifest.xml")
	if err != nil {
		t.Fatal(err)
	}
	man, err := format.ParseManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := man.VerifySignature(&userKey.PublicKey); err != nil {
		t.Fatal(err)
	}
	if man.User != "123456789012" {
		t.Errorf("manifest user %q", man.User)
	}
	k, err := format.UnwrapKey(userKey, man.UserEncryptedKey, man.UserEncryptedIV)
	if err != nil {
		t.Fatal(err)
	}
	restored, _ := os.Create(filepath.Join(dir, "restored.img"))
	defer restored.Close()
	src := partSource(func(name string) (io.ReadCloser, error) {
		return front.OpenAsEC2(ctx, bucket, "builds/packer/"+name)
	})
	if err := format.Unbundle(ctx, man, k, src, restored); err != nil {
		t.Fatalf("unbundling as EC2: %v", err)
	}
	got, _ := os.ReadFile(restored.Name())
	if !bytes.Equal(got, image) {
		t.Fatal("the bundle does not decrypt to the image on the instance")
	}
	objs, _ := front.Objects(ctx, bucket, "")
	if len(objs) != len(man.Parts)+1 {
		t.Errorf("bucket holds %v", objs)
	}
	for _, o := range objs {
		if acl, _ := front.ACL(bucket, o); acl != "aws-exec-read" {
			t.Errorf("%s: ACL %q", o, acl)
		}
	}
	left, _ := filepath.Glob(filepath.Join(root, "tmp", "instancestore-agent.*"))
	if len(left) > 0 {
		t.Errorf("left on the instance: %v", left)
	}

	// Secrets: not in the log, not in the output, not on any command line.
	keyPEM, _ := os.ReadFile(keyPEMFile)
	secrets := map[string]string{
		"AWS secret key":   backend.Credentials.SecretAccessKey,
		"X-Amz-Signature":  "X-Amz-Signature=",
		"X-Amz-Credential": "X-Amz-Credential=",
		"bundle key":       k.KeyHex(),
		"bundle IV":        k.IVHex(),
		"private key":      strings.Split(string(keyPEM), "\n")[1],
	}
	sawAgent := false
	for _, c := range seenCmdlines {
		// The agent runs from its private directory, as the embedded binary
		// ("instancestore-bundler agent") or the plugin itself (PluginArg).
		if strings.Contains(c, "/instancestore-agent.") && strings.Contains(c, "/instancestore-bundler") {
			sawAgent = true
		}
	}
	if !sawAgent || len(seenCmdlines) < 10 {
		t.Fatalf("the command-line sampler saw %d lines and no agent: it proves nothing", len(seenCmdlines))
	}
	if !strings.Contains(string(logText), "instancestore-bundle") {
		t.Fatal("the Packer log is empty: PACKER_LOG capture is broken")
	}
	for what, s := range secrets {
		if strings.Contains(string(logText), s) {
			t.Errorf("%s in the Packer log", what)
		}
		if strings.Contains(out, s) {
			t.Errorf("%s in the Packer output", what)
		}
		for _, c := range seenCmdlines {
			if strings.Contains(c, s) && !strings.Contains(c, "minio") {
				t.Errorf("%s on a command line: %.200q", what, c)
			}
		}
	}
}

// installPlugin builds the test plugin (testdata/plugin) and installs it where only
// this test's Packer looks; it returns Packer and the environment to run it with.
func installPlugin(t *testing.T, dir string) (string, []string) {
	t.Helper()
	packer := packerBin(t)
	pluginBin := filepath.Join(dir, "packer-plugin-instancestore")
	// A release version, so that templates' required_plugins (">= 0.1.0") take it.
	build := exec.Command("go", "build", "-ldflags=-s -w -X github.com/instancestore/packer-plugin-instancestore/version.VersionPrerelease=", "-o", pluginBin, "./testdata/plugin")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the test plugin: %v: %s", err, out)
	}
	env := append(os.Environ(),
		"PACKER_PLUGIN_PATH="+filepath.Join(dir, "plugins"),
		"PACKER_CONFIG_DIR="+filepath.Join(dir, "config"),
		"PACKER_CACHE_DIR="+filepath.Join(dir, "cache"),
		"CHECKPOINT_DISABLE=1", "HOME="+dir)
	install := exec.Command(packer, "plugins", "install", "--path", pluginBin, "github.com/instancestore/instancestore")
	install.Env = env
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("packer plugins install: %v: %s", err, out)
	}
	return packer, env
}

// TestDocsTemplateValidates: the template on the docs page passes `packer validate`.
func TestDocsTemplateValidates(t *testing.T) {
	testroot.Short(t, "builds the plugin and runs Packer")
	page, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "provisioners", "instancestore-bundle.mdx"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(page), "```hcl\n")
	if !ok {
		t.Fatal("no HCL example on the docs page")
	}
	src, _, _ := strings.Cut(rest, "```")
	dir := t.TempDir()
	packer, env := installPlugin(t, dir)
	tpl := filepath.Join(dir, "example.pkr.hcl")
	os.WriteFile(tpl, []byte(src), 0o644)
	cmd := exec.Command(packer, "validate", tpl)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("packer validate of the docs example: %v\n%s\n%s", err, out, src)
	}
	// And a broken one is refused with the provisioner's message.
	bad := strings.Replace(src, `s3_bucket     = "my-bundles"`, `s3_bucket     = "My_Bundles"`, 1)
	if bad == src {
		t.Fatal("the docs example changed: update this test's replacement")
	}
	os.WriteFile(tpl, []byte(bad), 0o644)
	cmd = exec.Command(packer, "validate", tpl)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a valid bucket name") {
		t.Fatalf("packer validate of a bad bucket name: %v\n%s", err, out)
	}
}

type partSource func(name string) (io.ReadCloser, error)

func (f partSource) OpenPart(name string) (io.ReadCloser, error) { return f(name) }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
