package s3env

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

var (
	minioOnce    sync.Once
	minioBackend *Backend
	minioErr     error
	minioDir     string
)

// backends returns gofakes3 and MinIO (shared by this package's tests; MinIO is
// built on first use unless `make deps` did it).
func backends(t *testing.T) []*Backend {
	t.Helper()
	fake, err := StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	if testing.Short() {
		if os.Getenv("INSTANCESTORE_CI") != "" {
			t.Fatal("-short is not allowed under INSTANCESTORE_CI")
		}
		t.Log("-short: gofakes3 only (MinIO is a child process that may need a 4-minute build)")
		return []*Backend{fake}
	}
	minioOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		minioDir, minioErr = os.MkdirTemp("", "s3env-minio-")
		if minioErr != nil {
			return
		}
		minioBackend, minioErr = StartMinIO(ctx, minioDir, Credentials{})
	})
	if minioErr != nil {
		t.Fatalf("StartMinIO: %v", minioErr)
	}
	return []*Backend{fake, minioBackend}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if minioBackend != nil {
		minioBackend.Close()
	}
	if minioDir != "" {
		os.RemoveAll(minioDir)
	}
	os.Exit(code)
}

func s3Code(err error) string {
	var e *S3Error
	if errors.As(asS3Error(err), &e) {
		return e.Code
	}
	return ""
}

func TestFrontRecordsACLsRegionsAndDeletes(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.Kind, func(t *testing.T) {
			f, err := NewFront(b, FrontOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			eu := f.Client("eu-west-1")
			bucket := "isim-acl-" + strings.ToLower(randomHex(6))
			if _, err := eu.CreateBucket(ctx, &s3.CreateBucketInput{
				Bucket:                    &bucket,
				CreateBucketConfiguration: &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraintEuWest1},
			}); err != nil {
				t.Fatalf("CreateBucket: %v", err)
			}
			if r, ok := f.BucketRegion(bucket); !ok || r != "eu-west-1" {
				t.Errorf("BucketRegion = %q %v, want eu-west-1", r, ok)
			}
			loc, err := eu.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: &bucket})
			if err != nil || loc.LocationConstraint != types.BucketLocationConstraintEuWest1 {
				t.Errorf("GetBucketLocation = %v %v", loc, err)
			}
			head, err := eu.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &bucket})
			if err != nil || aws.ToString(head.BucketRegion) != "eu-west-1" {
				t.Errorf("HeadBucket region = %v %v", head, err)
			}
			// Like S3, a request signed for another region than the bucket's fails.
			_, err = f.Client("us-east-1").PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("x"), Body: strings.NewReader("x")})
			if s3Code(err) != "AuthorizationHeaderMalformed" {
				t.Errorf("PutObject signed for us-east-1 into an eu-west-1 bucket: %v", err)
			}

			body := []byte("manifest body")
			if _, err := eu.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("img/a.manifest.xml"), Body: bytes.NewReader(body), ACL: types.ObjectCannedACLAwsExecRead}); err != nil {
				t.Fatalf("PutObject with ACL: %v", err)
			}
			if acl, ok := f.ACL(bucket, "img/a.manifest.xml"); !ok || acl != "aws-exec-read" {
				t.Errorf("ACL = %q %v, want aws-exec-read", acl, ok)
			}
			if got, err := f.GetAsEC2(bucket, "img/a.manifest.xml"); err != nil || !bytes.Equal(got, body) {
				t.Errorf("GetAsEC2 of an aws-exec-read object = %q %v", got, err)
			}
			if _, err := eu.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("img/private"), Body: strings.NewReader("p")}); err != nil {
				t.Fatalf("PutObject: %v", err)
			}
			if acl, _ := f.ACL(bucket, "img/private"); acl != "private" {
				t.Errorf("ACL without x-amz-acl = %q, want private", acl)
			}
			for _, key := range []string{"img/private", "img/missing"} {
				_, err := f.GetAsEC2(bucket, key)
				var e *S3Error
				if !errors.As(err, &e) || e.StatusCode != 403 || e.Code != "AccessDenied" {
					t.Errorf("GetAsEC2(%s) = %v, want 403 AccessDenied", key, err)
				}
			}
			// PutObjectAcl changes the record.
			if _, err := eu.PutObjectAcl(ctx, &s3.PutObjectAclInput{Bucket: &bucket, Key: aws.String("img/private"), ACL: types.ObjectCannedACLAwsExecRead}); err != nil {
				t.Logf("PutObjectAcl not supported by %s: %v", b.Kind, err)
			} else if acl, _ := f.ACL(bucket, "img/private"); acl != "aws-exec-read" {
				t.Errorf("ACL after PutObjectAcl = %q", acl)
			}
			// A multipart upload takes the ACL of its CreateMultipartUpload.
			mp, err := eu.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: aws.String("img/big"), ACL: types.ObjectCannedACLAwsExecRead})
			if err != nil {
				t.Fatalf("CreateMultipartUpload: %v", err)
			}
			part, err := eu.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: aws.String("img/big"), UploadId: mp.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("only part")})
			if err != nil {
				t.Fatalf("UploadPart: %v", err)
			}
			if _, err := eu.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: aws.String("img/big"), UploadId: mp.UploadId,
				MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: part.ETag, PartNumber: aws.Int32(1)}}}}); err != nil {
				t.Fatalf("CompleteMultipartUpload: %v", err)
			}
			if acl, _ := f.ACL(bucket, "img/big"); acl != "aws-exec-read" {
				t.Errorf("multipart ACL = %q", acl)
			}

			// Deletions are recorded, one by one and in batches.
			if _, err := eu.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: aws.String("img/big")}); err != nil {
				t.Fatalf("DeleteObject: %v", err)
			}
			if _, err := eu.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &bucket, Delete: &types.Delete{Quiet: aws.Bool(true),
				Objects: []types.ObjectIdentifier{{Key: aws.String("img/a.manifest.xml")}, {Key: aws.String("img/private")}}}}); err != nil {
				t.Fatalf("DeleteObjects: %v", err)
			}
			want := []string{bucket + "/img/big", bucket + "/img/a.manifest.xml", bucket + "/img/private"}
			if got := f.Deleted(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Deleted = %v, want %v", got, want)
			}
			if left, err := f.Objects(ctx, bucket, ""); err != nil || len(left) != 0 {
				t.Errorf("objects left: %v %v", left, err)
			}
			if _, ok := f.ACL(bucket, "img/big"); ok {
				t.Errorf("deleted object still has an ACL record")
			}
		})
	}
}

func TestPresignedPut(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.Kind, func(t *testing.T) {
			f, err := NewFront(b, FrontOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			client := f.Client("us-west-2")
			bucket := "isim-presign-" + strings.ToLower(randomHex(6))
			if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket,
				CreateBucketConfiguration: &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraintUsWest2}}); err != nil {
				t.Fatalf("CreateBucket: %v", err)
			}
			body := bytes.Repeat([]byte("part data "), 100000)
			sum := md5.Sum(body)
			md5b64 := base64.StdEncoding.EncodeToString(sum[:])
			presign := func(key string) (string, http.Header) {
				req, err := s3.NewPresignClient(client).PresignPutObject(ctx, &s3.PutObjectInput{
					Bucket: &bucket, Key: &key, ACL: types.ObjectCannedACLAwsExecRead, ContentMD5: &md5b64,
				}, s3.WithPresignExpires(5*time.Minute))
				if err != nil {
					t.Fatalf("PresignPutObject: %v", err)
				}
				if !strings.Contains(req.URL, "X-Amz-SignedHeaders=content-md5%3Bhost%3Bx-amz-acl") {
					t.Fatalf("presigned URL does not sign content-md5 and x-amz-acl")
				}
				return req.URL, req.SignedHeader
			}
			put := func(url string, h http.Header, data []byte, skip string) (int, string) {
				req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				for k, vs := range h {
					if !strings.EqualFold(k, "Host") && !strings.EqualFold(k, skip) {
						req.Header[k] = vs
					}
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("PUT: %v", err)
				}
				defer resp.Body.Close()
				msg, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(msg)
			}

			url, h := presign("bundle/image.part.0")
			if status, msg := put(url, h, body, ""); status != 200 {
				t.Fatalf("presigned PUT: %d %s", status, msg)
			}
			if acl, _ := f.ACL(bucket, "bundle/image.part.0"); acl != "aws-exec-read" {
				t.Errorf("ACL of presigned PUT = %q", acl)
			}
			if got, err := f.GetAsEC2(bucket, "bundle/image.part.0"); err != nil || !bytes.Equal(got, body) {
				t.Errorf("GetAsEC2 of the presigned part: %d bytes, %v", len(got), err)
			}
			if !b.ChecksSignatures {
				return
			}
			// MinIO checks the signature: without the signed ACL header, or with a
			// body that does not match the signed Content-MD5, the PUT fails.
			url, h = presign("bundle/image.part.1")
			// (MinIO answers 400 AccessDenied "There were headers present in the
			// request which were not signed".)
			if status, msg := put(url, h, body, "X-Amz-Acl"); status/100 != 4 || !strings.Contains(msg, "<Code>AccessDenied</Code>") {
				t.Errorf("presigned PUT without x-amz-acl: %d %s, want AccessDenied", status, msg)
			}
			if _, ok := f.ACL(bucket, "bundle/image.part.1"); ok {
				t.Errorf("a rejected PUT got an ACL record")
			}
			bad := append([]byte(nil), body...)
			bad[0] ^= 1
			if status, msg := put(url, h, bad, ""); status != 400 || !strings.Contains(msg, "BadDigest") {
				t.Errorf("presigned PUT with a wrong body: %d %s, want 400 BadDigest", status, msg)
			}
			// And a wrong secret is refused.
			wrong := NewClient(f.URL(), Credentials{AccessKeyID: b.Credentials.AccessKeyID, SecretAccessKey: "wrong-secret-key"}, "us-west-2")
			_, err = wrong.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("x"), Body: strings.NewReader("x")})
			if code := s3Code(err); code != "SignatureDoesNotMatch" {
				t.Errorf("PutObject with a wrong secret: %v", err)
			}
			if left, err := f.Objects(ctx, bucket, ""); err != nil || fmt.Sprint(left) != "[bundle/image.part.0]" {
				t.Errorf("objects = %v %v", left, err)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	b, err := StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f, err := NewFront(b, FrontOptions{Faults: Faults{Rate: 0.2, Seed: 7, Stall: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	f.SetFaults(Faults{}) // no faults while setting up
	if _, err := f.Client("us-east-1").CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("isim-faults")}); err != nil {
		t.Fatal(err)
	}
	f.SetFaults(Faults{Rate: 0.2, Seed: 7, Stall: time.Minute})

	// The client gives up long before a stall ends; requests run 30 at a time so that
	// stalls overlap.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	const n = 300
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 30)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			what := classifyAnswer(t, hc, fmt.Sprintf("%s/isim-faults/k%d", f.URL(), i))
			mu.Lock()
			seen[what]++
			mu.Unlock()
		})
	}
	wg.Wait()
	counts := f.FaultCounts()
	t.Logf("client saw %v; front injected %v", seen, counts)
	total := 0
	for _, k := range AllFaults {
		if counts[k] == 0 {
			t.Errorf("no %s fault in %d requests", k, n)
		}
		total += counts[k]
	}
	if rate := float64(total) / n; rate < 0.1 || rate > 0.3 {
		t.Errorf("fault rate %.2f, want about 0.2", rate)
	}
	if seen["500"] != counts[FaultInternalError] || seen["503"] != counts[FaultServiceUnavailable] ||
		seen["slowdown"] != counts[FaultSlowDown] || seen["conn"] != counts[FaultReset] || seen["timeout"] != counts[FaultStall] {
		t.Errorf("what the client saw %v does not match what was injected %v", seen, counts)
	}
	for _, r := range f.Requests() {
		want := map[FaultKind]int{"": 200, FaultInternalError: 500, FaultServiceUnavailable: 503, FaultSlowDown: 503}[r.Fault]
		if r.Method == http.MethodPut && r.Key != "" && r.Status != want {
			t.Errorf("request record %+v: status %d, want %d", r, r.Status, want)
		}
	}
	if seen["ok"] != n-total {
		t.Errorf("%d requests succeeded, want %d", seen["ok"], n-total)
	}
	// Faulted requests never reached the backend.
	objs, err := f.Objects(ctx, "isim-faults", "")
	if err != nil || len(objs) != n-total {
		t.Errorf("%d objects stored, want %d (%v)", len(objs), n-total, err)
	}

	// The same seed gives the same decisions.
	decisions := func() string {
		g, err := NewFront(b, FrontOptions{Faults: Faults{Rate: 0.2, Seed: 7, Kinds: []FaultKind{FaultInternalError}}})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		for i := range 50 {
			resp, err := http.Get(fmt.Sprintf("%s/isim-faults/k%d", g.URL(), i))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		var d []bool
		for _, r := range g.Requests() {
			d = append(d, r.Fault != "")
		}
		return fmt.Sprint(d)
	}
	if a, b := decisions(), decisions(); a != b || !strings.Contains(a, "true") {
		t.Errorf("same seed, different decisions (or none):\n%v\n%v", a, b)
	}
}

// classifyAnswer PUTs to url and names what came back.
func classifyAnswer(t *testing.T, hc *http.Client, url string) string {
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader("data"))
	resp, err := hc.Do(req)
	switch {
	case err != nil && isTimeout(err):
		return "timeout"
	case err != nil:
		return "conn"
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case resp.StatusCode == 200:
		return "ok"
	case resp.StatusCode == 500 && bytes.Contains(msg, []byte("<Code>InternalError</Code>")):
		return "500"
	case resp.StatusCode == 503 && bytes.Contains(msg, []byte("<Code>SlowDown</Code>")):
		return "slowdown"
	case resp.StatusCode == 503 && bytes.Contains(msg, []byte("<Code>ServiceUnavailable</Code>")):
		return "503"
	}
	t.Errorf("unexpected answer %d %s", resp.StatusCode, msg)
	return "other"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestFrontListenAddress(t *testing.T) {
	b, err := StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, bad := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		if f, err := NewFront(b, FrontOptions{Listen: bad}); err == nil {
			f.Close()
			t.Errorf("NewFront listened on %q", bad)
		}
	}
	f, err := NewFront(b, FrontOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !strings.HasPrefix(f.URL(), "http://127.0.0.1:") {
		t.Errorf("URL = %s", f.URL())
	}
}

func TestObjectOwnership(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.Kind, func(t *testing.T) {
			// S3's default since 2023: new buckets have ACLs disabled.
			f, err := NewFront(b, FrontOptions{DefaultObjectOwnership: "BucketOwnerEnforced"})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			c := f.Client("us-east-1")
			bucket := "isim-own-" + strings.ToLower(randomHex(6))
			if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
				t.Fatal(err)
			}
			own, err := c.GetBucketOwnershipControls(ctx, &s3.GetBucketOwnershipControlsInput{Bucket: &bucket})
			if err != nil || len(own.OwnershipControls.Rules) != 1 || own.OwnershipControls.Rules[0].ObjectOwnership != types.ObjectOwnershipBucketOwnerEnforced {
				t.Fatalf("GetBucketOwnershipControls = %+v %v", own, err)
			}
			put := func(acl types.ObjectCannedACL) error {
				_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("k"), Body: strings.NewReader("x"), ACL: acl})
				return err
			}
			if err := put(types.ObjectCannedACLAwsExecRead); s3Code(err) != "AccessControlListNotSupported" {
				t.Errorf("PutObject with aws-exec-read into an ACL-less bucket: %v", err)
			}
			if err := put(types.ObjectCannedACLBucketOwnerFullControl); err != nil {
				t.Errorf("PutObject with bucket-owner-full-control: %v", err)
			}
			if _, err := c.PutBucketOwnershipControls(ctx, &s3.PutBucketOwnershipControlsInput{Bucket: &bucket,
				OwnershipControls: &types.OwnershipControls{Rules: []types.OwnershipControlsRule{{ObjectOwnership: types.ObjectOwnershipObjectWriter}}}}); err != nil {
				t.Fatalf("PutBucketOwnershipControls: %v", err)
			}
			if got := f.ObjectOwnership(bucket); got != "ObjectWriter" {
				t.Errorf("ObjectOwnership = %s", got)
			}
			if err := put(types.ObjectCannedACLAwsExecRead); err != nil {
				t.Errorf("PutObject with aws-exec-read after enabling ACLs: %v", err)
			}
			// A bucket created with ACLs enabled says so.
			other := bucket + "-w"
			if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &other, ObjectOwnership: types.ObjectOwnershipObjectWriter}); err != nil {
				t.Fatal(err)
			}
			if got := f.ObjectOwnership(other); got != "ObjectWriter" {
				t.Errorf("ObjectOwnership of a bucket created with ObjectWriter = %s", got)
			}
		})
	}
}
