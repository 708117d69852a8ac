//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// startMinIO runs MinIO behind the fault-injecting front, with the standard AWS
// environment pointing at it (the commands read credentials only from there).
func startMinIO(t *testing.T) *s3env.Front {
	t.Helper()
	testroot.Short(t, "runs MinIO (a child process that may need a 4-minute build)")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	b, err := s3env.StartMinIO(ctx, t.TempDir(), s3env.Credentials{})
	if err != nil {
		t.Fatalf("StartMinIO: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	f, err := s3env.NewFront(b, s3env.FrontOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	t.Setenv("AWS_ACCESS_KEY_ID", b.Credentials.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", b.Credentials.SecretAccessKey)
	t.Setenv("AWS_ENDPOINT_URL_S3", f.URL())
	t.Setenv("AWS_REGION", b.Region)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	if _, err := f.Client(b.Region).CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("cli-bundles")}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	return f
}

func TestS3CommandsRoundTrip(t *testing.T) {
	f := startMinIO(t)
	dir := t.TempDir()
	certPath, keyPath := volUser(t, dir)

	// A 35 MiB image of random data: 4 parts (random data does not compress).
	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 35<<20)
	rand.Read(data)
	volMust(t, os.WriteFile(img, data, 0o644))
	bdir := filepath.Join(dir, "bundle")
	volMust(t, os.Mkdir(bdir, 0o755))
	if code, _, e := runCLI("bundle-image", "-i", img, "-u", "123456789012", "-c", certPath, "-k", keyPath, "-d", bdir, "-p", "disk"); code != 0 {
		t.Fatalf("bundle-image: %d %s", code, e)
	}
	manifest := filepath.Join(bdir, "disk.manifest.xml")

	// Part 2 fails every time: the upload stops and says how to resume.
	f.SetFaults(s3env.Faults{Rate: 1, Seed: 1, Kinds: []s3env.FaultKind{s3env.FaultInternalError},
		Match: func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, ".part.2")
		}})
	code, out, e := runCLI("upload-bundle", "-b", "cli-bundles/images", "-m", manifest)
	if code != 1 || !strings.Contains(e, "--part") {
		t.Fatalf("upload with a failing part: exit %d, stderr %s", code, e)
	}
	if strings.Contains(out+e, "X-Amz-Signature") || strings.Contains(out+e, os.Getenv("AWS_SECRET_ACCESS_KEY")) {
		t.Errorf("output shows a presigned URL or the secret key:\n%s%s", out, e)
	}
	resume := regexp.MustCompile(`resume with --part (\d+)`).FindStringSubmatch(e)
	if resume == nil || resume[1] > "2" {
		t.Fatalf("the error does not say where to resume (at most part 2): %s", e)
	}
	f.SetFaults(s3env.Faults{})
	if code, _, e := runCLI("upload-bundle", "-b", "cli-bundles/images", "-m", manifest, "--part", resume[1], "--retry"); code != 0 {
		t.Fatalf("upload --part 2: %d %s", code, e)
	}
	for _, n := range []string{"disk.part.0", "disk.part.3", "disk.manifest.xml"} {
		if acl, ok := f.ACL("cli-bundles", "images/"+n); !ok || acl != "aws-exec-read" {
			t.Errorf("%s: ACL %q %v, want aws-exec-read", n, acl, ok)
		}
	}

	// Download, then unbundle: identical bytes.
	ddir := filepath.Join(dir, "down")
	volMust(t, os.Mkdir(ddir, 0o755))
	if code, _, e := runCLI("download-bundle", "-b", "cli-bundles/images", "-p", "disk", "-d", ddir); code != 0 {
		t.Fatalf("download-bundle: %d %s", code, e)
	}
	udir := filepath.Join(dir, "un")
	volMust(t, os.Mkdir(udir, 0o755))
	if code, _, e := runCLI("unbundle", "-m", filepath.Join(ddir, "disk.manifest.xml"), "-k", keyPath, "-d", udir); code != 0 {
		t.Fatalf("unbundle: %d %s", code, e)
	}
	got, err := os.ReadFile(filepath.Join(udir, "disk"))
	volMust(t, err)
	if !bytes.Equal(got, data) {
		t.Fatalf("the unbundled image differs from the original")
	}

	// A damaged part in S3 fails the download and is not left on disk.
	cl := f.Client(os.Getenv("AWS_REGION"))
	_, err = cl.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("cli-bundles"), Key: aws.String("images/disk.part.1"), Body: bytes.NewReader([]byte("damaged"))})
	volMust(t, err)
	bad := filepath.Join(dir, "bad")
	volMust(t, os.Mkdir(bad, 0o755))
	if code, _, e := runCLI("download-bundle", "-b", "cli-bundles/images", "-p", "disk", "-d", bad); code != 1 || !strings.Contains(e, "digest") {
		t.Errorf("download of a damaged bundle: exit %d, %s", code, e)
	}
	if _, err := os.Stat(filepath.Join(bad, "disk.part.1")); err == nil {
		t.Errorf("the damaged part was left on disk")
	}

	// Dry run deletes nothing; delete leaves nothing; --clear removes the empty bucket.
	if code, out, _ := runCLI("delete-bundle", "-b", "cli-bundles/images", "-p", "disk", "--dry-run"); code != 0 || !strings.Contains(out, "would delete") {
		t.Fatalf("dry run: %d %s", code, out)
	}
	if n := countObjects(t, cl); n != 5 {
		t.Fatalf("after the dry run: %d objects, want 5", n)
	}
	if code, _, e := runCLI("delete-bundle", "-b", "cli-bundles/images", "-m", manifest, "--clear"); code != 0 {
		t.Fatalf("delete-bundle: %d %s", code, e)
	}
	if _, err := cl.HeadBucket(context.Background(), &s3.HeadBucketInput{Bucket: aws.String("cli-bundles")}); err == nil {
		t.Errorf("--clear left the empty bucket")
	}
}

func countObjects(t *testing.T, cl *s3.Client) int {
	t.Helper()
	out, err := cl.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("cli-bundles")})
	volMust(t, err)
	return len(out.Contents)
}

func TestS3CommandsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"upload-bundle", "-m", "x.manifest.xml"}, "-b, --bucket is required"},
		{[]string{"upload-bundle", "-b", "Bad_Bucket", "-m", "x"}, "-b, --bucket"},
		{[]string{"upload-bundle", "-b", "bucket", "-m", "x", "--acl", "public-read"}, "--acl"},
		{[]string{"upload-bundle", "-b", "bucket", "-m", "x", "--part", "-1"}, "--part"},
		{[]string{"download-bundle", "-b", "bucket"}, "-m, --manifest or -p, --prefix is required"},
		{[]string{"delete-bundle", "-b", "bucket", "-m", "a", "-p", "b"}, "both given"},
	} {
		code, _, e := runCLI(tc.args...)
		if code != 2 || !strings.Contains(e, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, e, tc.want)
		}
	}
	if code, _, e := runCLI("upload-bundle", "-h"); code != 0 || !strings.Contains(e, "exit status: 0 done") {
		t.Errorf("upload-bundle -h: %d %s", code, e)
	}
}
