package s3bundle

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

var (
	minioOnce sync.Once
	minioB    *s3env.Backend
	minioErr  error
	minioDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if minioB != nil {
		minioB.Close()
		os.RemoveAll(minioDir)
	}
	os.Exit(code)
}

// minioFront is a Front over the package's MinIO (which checks SigV4, presigned URLs
// included).
func minioFront(t *testing.T) *s3env.Front {
	t.Helper()
	return minioFrontWith(t, s3env.FrontOptions{})
}

func minioFrontWith(t *testing.T, opts s3env.FrontOptions) *s3env.Front {
	t.Helper()
	minioOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // MinIO may be built first (minutes)
		defer cancel()
		minioDir, _ = os.MkdirTemp("", "s3bundle-minio-")
		minioB, minioErr = s3env.StartMinIO(ctx, filepath.Join(minioDir, "data"), s3env.Credentials{})
	})
	if minioErr != nil {
		t.Fatalf("StartMinIO: %v", minioErr)
	}
	waitReady(t, minioB)
	f, err := s3env.NewFront(minioB, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func newBucket(t *testing.T, f *s3env.Front, region, name, prefix string, create bool) *Bucket {
	t.Helper()
	c := f.Backend().Credentials
	cfg := aws.Config{Region: region, BaseEndpoint: aws.String(f.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")}
	if create {
		in := &s3.CreateBucketInput{Bucket: aws.String(name)}
		if _, err := f.Client(region).CreateBucket(context.Background(), in); err != nil {
			t.Fatalf("creating bucket: %v", err)
		}
	}
	b, err := New(cfg, region, name, prefix, Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func uniqueName(t *testing.T) string {
	return fmt.Sprintf("t-%d", time.Now().UnixNano())
}

func testPart(i int, size int) *bundle.Part {
	d := bytes.Repeat([]byte{byte(i + 1)}, size)
	return &bundle.Part{Index: i, Name: fmt.Sprintf("image.part.%d", i), Data: d, SHA1: sha1.Sum(d), MD5: md5.Sum(d)}
}

// TestPresignedPUTs checks what MinIO (SigV4) and the Front (ACLs) say about the
// presigned URLs: accepted with exactly the signed headers, refused without the ACL or
// with another body.
func TestPresignedPUTs(t *testing.T) {
	f := minioFront(t)
	b := newBucket(t, f, "us-east-1", uniqueName(t), "a/b", true)
	ctx := context.Background()

	p := testPart(0, 1000)
	req, err := b.PresignPart(ctx, p.Name, p.MD5)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(req.URL, "X-Amz-SignedHeaders=content-md5%3Bhost%3Bx-amz-acl") {
		t.Fatalf("signed headers not as expected in %s", strings.SplitN(req.URL, "?", 2)[0])
	}
	if time.Until(req.Expires) > DefaultURLExpiry || time.Until(req.Expires) < DefaultURLExpiry-time.Minute {
		t.Fatalf("expiry %s", time.Until(req.Expires))
	}
	put := func(body []byte, drop string) int {
		hr, _ := http.NewRequest(http.MethodPut, req.URL, bytes.NewReader(body))
		for k, v := range req.Header {
			if !strings.EqualFold(k, drop) {
				hr.Header[k] = v
			}
		}
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := put(p.Data, "X-Amz-Acl"); s != http.StatusForbidden && s != http.StatusBadRequest {
		t.Errorf("PUT without the signed ACL header: status %d, want 400 or 403", s)
	}
	if s := put(bytes.Repeat([]byte{9}, 1000), ""); s != http.StatusBadRequest {
		t.Errorf("PUT of another body: status %d, want 400 BadDigest", s)
	}
	if s := put(p.Data, ""); s != http.StatusOK {
		t.Fatalf("PUT with the signed headers: status %d", s)
	}
	if acl, _ := f.ACL(b.Name, "a/b/image.part.0"); acl != "aws-exec-read" {
		t.Fatalf("ACL %q", acl)
	}

	// The presigned sink end to end: several parts, all stored with the ACL.
	sink := presigned.NewSink(ctx, presigned.Config{Presign: func(ctx context.Context, p *bundle.Part, fresh bool) (*presigned.Request, error) {
		return b.PresignPart(ctx, p.Name, p.MD5)
	}})
	for i := 1; i < 6; i++ {
		if err := sink.PutPart(testPart(i, 300<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, "image.part.")
	if err != nil || len(names) != 6 {
		t.Fatalf("List: %v %v", names, err)
	}
	for _, n := range names {
		if acl, _ := f.ACL(b.Name, b.Key(n)); acl != "aws-exec-read" {
			t.Errorf("%s: ACL %q", n, acl)
		}
	}
	if err := b.Delete(ctx, names); err != nil {
		t.Fatal(err)
	}
	if names, _ := b.List(ctx, ""); len(names) != 0 {
		t.Fatalf("left after Delete: %v", names)
	}
}

func TestManifestUploadAndDeleteBundle(t *testing.T) {
	f := minioFront(t)
	b := newBucket(t, f, "us-east-1", uniqueName(t), "", true)
	ctx := context.Background()
	cert, priv, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	ec2, _ := bundle.EC2Certificate("us-east-1")
	res := &bundle.Result{Name: "img", Digest: strings.Repeat("ab", 20), Size: 100, BundledSize: bundle.PartSize + 16,
		Parts: []bundle.PartInfo{{Index: 0, Name: "img.part.0", Size: bundle.PartSize, SHA1: strings.Repeat("cd", 20)}, {Index: 1, Name: "img.part.1", Size: 16, SHA1: strings.Repeat("ef", 20)}}}
	k, _ := bundle.NewKey()
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: "123456789012"}, k, ec2, cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutManifest(ctx, m); err == nil {
		t.Fatal("unsigned manifest uploaded")
	}
	if err := m.Sign(priv); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"img.part.0", "img.part.1", "other.part.0"} {
		if err := b.Put(ctx, n, []byte(n), "application/octet-stream"); err != nil {
			t.Fatal(err)
		}
	}
	loc, err := b.PutManifest(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if loc != b.Name+"/img.manifest.xml" {
		t.Fatalf("location %q", loc)
	}
	got, err := f.GetAsEC2(b.Name, "img.manifest.xml")
	if err != nil || !bytes.Equal(got, m.Marshal()) {
		t.Fatalf("EC2 reads the manifest: %v", err)
	}
	if ok, err := b.Exists(ctx, "img.manifest.xml"); !ok || err != nil {
		t.Fatalf("Exists: %v %v", ok, err)
	}
	if ok, err := b.Exists(ctx, "nope.manifest.xml"); ok || err != nil {
		t.Fatalf("Exists(nope): %v %v", ok, err)
	}
	if err := b.DeleteBundle(ctx, "img"); err != nil {
		t.Fatal(err)
	}
	names, _ := b.List(ctx, "")
	if len(names) != 1 || names[0] != "other.part.0" {
		t.Fatalf("after DeleteBundle: %v (want only the other bundle's object)", names)
	}
}

func TestPreflight(t *testing.T) {
	f := minioFront(t)
	ctx := context.Background()

	t.Run("ok", func(t *testing.T) {
		b := newBucket(t, f, "us-east-1", uniqueName(t), "p", true)
		created, err := b.Preflight(ctx, PreflightOptions{})
		if err != nil || created {
			t.Fatalf("Preflight: %v created=%v", err, created)
		}
		if names, _ := b.List(ctx, ""); len(names) != 0 {
			t.Fatalf("probe object left: %v", names)
		}
		var sawProbeACL bool
		for _, r := range f.Requests() {
			if r.Method == http.MethodPut && strings.Contains(r.Key, ".instancestore-preflight-") && r.Status == 200 {
				sawProbeACL = true
			}
		}
		if !sawProbeACL {
			t.Fatal("no probe upload seen")
		}
	})
	t.Run("missing", func(t *testing.T) {
		b := newBucket(t, f, "us-east-1", uniqueName(t), "", false)
		_, err := b.Preflight(ctx, PreflightOptions{})
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("want 'does not exist', got %v", err)
		}
	})
	t.Run("create", func(t *testing.T) {
		b := newBucket(t, f, "eu-west-1", uniqueName(t), "", false)
		created, err := b.Preflight(ctx, PreflightOptions{Create: true})
		if err != nil || !created {
			t.Fatalf("Preflight create: %v created=%v", err, created)
		}
		if r, _ := f.BucketRegion(b.Name); r != "eu-west-1" {
			t.Fatalf("created in region %q", r)
		}
	})
	t.Run("ACLs disabled", func(t *testing.T) {
		b := newBucket(t, f, "us-east-1", uniqueName(t), "", true)
		f.SetObjectOwnership(b.Name, "BucketOwnerEnforced")
		_, err := b.Preflight(ctx, PreflightOptions{})
		if err == nil || !strings.Contains(err.Error(), "ACLs disabled") || !strings.Contains(err.Error(), "Object writer") {
			t.Fatalf("want the ACLs-disabled explanation, got %v", err)
		}
	})
	t.Run("ACLs disabled, ownership controls unreadable", func(t *testing.T) {
		// The probe upload still catches it, with S3's error explained.
		b := newBucket(t, f, "us-east-1", uniqueName(t), "", true)
		f.SetObjectOwnership(b.Name, "BucketOwnerEnforced")
		err := b.probe(ctx)
		if err == nil || !strings.Contains(err.Error(), "AccessControlListNotSupported") || !strings.Contains(err.Error(), "Bucket owner enforced") {
			t.Fatalf("want AccessControlListNotSupported explained, got %v", err)
		}
	})
	t.Run("created with ACLs enabled", func(t *testing.T) {
		// As on AWS since 2023: new buckets have ACLs disabled unless asked otherwise.
		f := minioFrontWith(t, s3env.FrontOptions{DefaultObjectOwnership: "BucketOwnerEnforced"})
		b := newBucket(t, f, "us-east-1", uniqueName(t), "", false)
		if _, err := b.Preflight(ctx, PreflightOptions{Create: true}); err != nil {
			t.Fatal(err)
		}
		if o := f.ObjectOwnership(b.Name); o != "ObjectWriter" {
			t.Fatalf("created bucket's Object Ownership %q, want ObjectWriter", o)
		}
	})
	t.Run("SSE-KMS default encryption", func(t *testing.T) {
		// MinIO has no KMS here: a front answers GetBucketEncryption as S3 does for a
		// bucket with aws:kms default encryption, and passes the rest to MinIO
		// (Host kept, so the signatures still check).
		name := uniqueName(t)
		newBucket(t, f, "us-east-1", name, "", true)
		target, _ := url.Parse(f.URL())
		proxy := httputil.NewSingleHostReverseProxy(target)
		kms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := r.URL.Query()["encryption"]; ok && r.Method == http.MethodGet {
				w.Header().Set("Content-Type", "application/xml")
				fmt.Fprint(w, `<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>arn:aws:kms:us-east-1:111122223333:key/k</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>`)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		defer kms.Close()
		c := f.Backend().Credentials
		cfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(kms.URL),
			Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")}
		b, err := New(cfg, "us-east-1", name, "", Options{PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Preflight(ctx, PreflightOptions{})
		if err == nil || !strings.Contains(err.Error(), "encrypts new objects with aws:kms by default") || !strings.Contains(err.Error(), "AES256") {
			t.Fatalf("want the SSE-KMS explanation, got %v", err)
		}
		// The same bucket without the KMS answer passes: the check is what failed.
		if _, err := newBucket(t, f, "us-east-1", name, "", false).Preflight(ctx, PreflightOptions{}); err != nil {
			t.Fatalf("the same bucket through MinIO directly: %v", err)
		}
	})
	t.Run("wrong region", func(t *testing.T) {
		name := uniqueName(t)
		newBucket(t, f, "us-east-1", name, "", true)
		f.SetBucketRegion(name, "eu-central-1")
		b := newBucket(t, f, "us-west-2", name, "", false)
		_, err := b.Preflight(ctx, PreflightOptions{})
		if err == nil || !strings.Contains(err.Error(), "region") {
			t.Fatalf("want a region error, got %v", err)
		}
	})
}

func TestBucketNames(t *testing.T) {
	for _, n := range []string{"ab", "Upper", "under_score", strings.Repeat("a", 64)} {
		if err := CheckBucketName(n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
	if err := CheckBucketName("my-bundles.example"); err != nil {
		t.Error(err)
	}
}

// waitReady waits until MinIO answers requests (it says "Server not initialized yet"
// for a moment after it starts listening).
func waitReady(t *testing.T, b *s3env.Backend) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := b.Client("us-east-1").ListBuckets(context.Background(), &s3.ListBucketsInput{})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("MinIO not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
