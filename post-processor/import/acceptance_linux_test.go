//go:build linux

package importpp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// The acceptance test runs the real `packer build` of example/import against the
// local EC2 + S3 environment: the file builder hands over a raw image made by
// example/import/make-image.sh, the post-processor bundles, uploads and registers it.
// The registered bundle is then unbundled with the user's key and compared with the
// image byte for byte. Bad inputs must fail with their message and leave nothing.

type accEnv struct {
	root, packer string
	env          []string
	vars         map[string]string
	cfg, s3cfg   aws.Config
	ec2          *ec2.Client
}

func setup(t *testing.T) *accEnv {
	t.Helper()
	testroot.Acceptance(t)
	testroot.Require(t)
	root, _ := filepath.Abs("../..")
	run := func(dir string, env []string, name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run(root, nil, filepath.Join(root, "scripts/build-tools.sh"))
	dir := t.TempDir()
	a := &accEnv{root: root, packer: filepath.Join(root, "bin/packer"), env: []string{
		"PACKER_PLUGIN_PATH=" + filepath.Join(dir, "plugins"),
		"PACKER_CONFIG_DIR=" + filepath.Join(dir, "config"),
		"PACKER_CACHE_DIR=" + filepath.Join(dir, "cache"),
		"CHECKPOINT_DISABLE=1", "PACKER_NO_COLOR=1",
	}}
	plugin := filepath.Join(dir, "build/packer-plugin-instancestore")
	run(root, nil, "go", "build", "-ldflags", "-X github.com/instancestore/packer-plugin-instancestore/version.VersionPrerelease=", "-o", plugin, ".")
	run(root, a.env, a.packer, "plugins", "install", "--path", plugin, "github.com/instancestore/instancestore")

	le, err := localenv.Start(context.Background(), localenv.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting the local environment: %v", err)
	}
	t.Cleanup(func() {
		if err := le.Close(); err != nil {
			t.Errorf("closing the local environment: %v", err)
		}
	})
	a.vars = map[string]string{}
	for _, kv := range le.Vars() {
		a.vars[kv.Name] = kv.Value
		a.env = append(a.env, kv.Name+"="+kv.Value)
	}
	a.cfg = aws.Config{Region: a.vars["AWS_REGION"], Credentials: credentials.NewStaticCredentialsProvider(a.vars["AWS_ACCESS_KEY_ID"], a.vars["AWS_SECRET_ACCESS_KEY"], "")}
	a.s3cfg = a.cfg.Copy()
	a.s3cfg.BaseEndpoint = aws.String(a.vars["AWS_ENDPOINT_URL_S3"])
	a.ec2 = ec2.NewFromConfig(a.cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(a.vars["AWS_ENDPOINT_URL_EC2"]) })
	return a
}

// build runs packer build of example/import with the variables.
func (a *accEnv) build(t *testing.T, vars ...string) (string, error) {
	t.Helper()
	dir := filepath.Join(a.root, "example", "import")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	init := exec.CommandContext(ctx, a.packer, "init", ".")
	init.Dir, init.Env = dir, append(os.Environ(), a.env...)
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("packer init: %v\n%s", err, out)
	}
	args := []string{"build", "-color=false"}
	for _, v := range vars {
		args = append(args, "-var", v)
	}
	cmd := exec.CommandContext(ctx, a.packer, append(args, ".")...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), a.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func makeImage(t *testing.T, a *accEnv, path, kind string) {
	t.Helper()
	if out, err := exec.Command(filepath.Join(a.root, "example/import/make-image.sh"), path, kind).CombinedOutput(); err != nil {
		t.Fatalf("make-image.sh: %v\n%s", err, out)
	}
}

// bucketObjects lists what the bucket holds (nothing when it does not exist).
func (a *accEnv) bucketObjects(t *testing.T, bucket string) []string {
	t.Helper()
	b, err := s3bundle.New(a.s3cfg, a.cfg.Region, bucket, "", s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(context.Background(), "")
	if err != nil && !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Fatal(err)
	}
	return names
}

func (a *accEnv) imageCount(t *testing.T) int {
	t.Helper()
	out, err := a.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Images)
}

func TestAcceptanceImport(t *testing.T) {
	a := setup(t)
	dir := t.TempDir()

	// The user's key, so that the bundle can be unbundled and compared.
	cert, key, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)

	hvm := filepath.Join(dir, "disk.raw")
	makeImage(t, a, hvm, "hvm")
	images := a.imageCount(t)

	t.Run("hvm", func(t *testing.T) {
		out, err := a.build(t, "image="+hvm, "output_dir="+dir, "s3_bucket=import-hvm", "x509_cert_path="+certPath, "x509_key_path="+keyPath)
		if err != nil {
			t.Fatalf("packer build: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`(?m)^\S+: (ami-[0-9a-f]+) \(manifest s3://([^)]+)\)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no AMI in the output:\n%s", out)
		}
		d, err := a.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{m[1]}})
		if err != nil || len(d.Images) != 1 {
			t.Fatalf("DescribeImages %s: %v", m[1], err)
		}
		im := d.Images[0]
		if im.VirtualizationType != "hvm" || aws.ToString(im.ImageLocation) != m[2] || im.State != "available" {
			t.Errorf("AMI %s: virtualization %s, location %s, state %s; want hvm, %s, available", m[1], im.VirtualizationType, aws.ToString(im.ImageLocation), im.State, m[2])
		}
		if len(im.Tags) == 0 {
			t.Errorf("AMI %s has no tags", m[1])
		}
		// Unbundle the registered bundle with the user's key: identical bytes.
		bucket, keyName, _ := strings.Cut(m[2], "/")
		b, err := s3bundle.New(a.s3cfg, a.cfg.Region, bucket, filepath.Dir(keyName), s3bundle.Options{PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		man, err := b.GetManifest(context.Background(), strings.TrimSuffix(filepath.Base(keyName), ".manifest.xml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := man.VerifySignature(&key.PublicKey); err != nil {
			t.Fatalf("manifest signature: %v", err)
		}
		k, err := bundle.UnwrapKey(key, man.UserEncryptedKey, man.UserEncryptedIV)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(dir, "unbundled.raw"))
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		if err := bundle.Unbundle(context.Background(), man, k, b, dst); err != nil {
			t.Fatalf("unbundling: %v", err)
		}
		want, _ := os.ReadFile(hvm)
		got, _ := os.ReadFile(dst.Name())
		if !bytes.Equal(want, got) {
			t.Errorf("the unbundled image (%d bytes) differs from the imported one (%d bytes)", len(got), len(want))
		}
		if strings.Contains(out, "X-Amz-Signature") || strings.Contains(out, a.vars["AWS_SECRET_ACCESS_KEY"]) {
			t.Errorf("packer's output shows a presigned URL or the secret key")
		}
	})
	images = a.imageCount(t)

	bad := []struct {
		name, kind, file, want string
		vars                   []string
	}{
		{"qcow2", "", "disk.qcow2", "qemu-img convert -O raw", nil},
		{"pv-without-kernel", "pv", "root.img", "needs a kernel: set ami_kernel_id", nil},
		{"missing-image", "hvm", "disk3.raw", "image_path", []string{"image_path=" + filepath.Join(dir, "no-such.raw")}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.file)
			if tc.kind == "" {
				os.WriteFile(p, append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 4096)...), 0o644)
			} else {
				makeImage(t, a, p, tc.kind)
			}
			bucket := "import-" + tc.name
			vars := append([]string{"image=" + p, "output_dir=" + t.TempDir(), "s3_bucket=" + bucket}, tc.vars...)
			out, err := a.build(t, vars...)
			if err == nil {
				t.Fatalf("packer build succeeded:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not say %q:\n%s", tc.want, out)
			}
			if objs := a.bucketObjects(t, bucket); len(objs) > 0 {
				t.Errorf("bucket %s still holds %v", bucket, objs)
			}
			if n := a.imageCount(t); n != images {
				t.Errorf("%d AMIs after the failed import, want %d", n, images)
			}
		})
	}
}
