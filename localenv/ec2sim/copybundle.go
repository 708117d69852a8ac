package ec2sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// ObjectWriter is how CopyImage writes the copy of an instance store-backed AMI's
// bundle, as EC2 does on the caller's behalf: into a bucket of the destination region
// that it creates, with objects EC2 can read back.
type ObjectWriter interface {
	// EnsureBucket creates bucket in region, or accepts it when it already exists.
	EnsureBucket(ctx context.Context, bucket, region string) error
	// PutAsEC2 stores an object readable by EC2 (aws-exec-read).
	PutAsEC2(ctx context.Context, bucket, key string, data []byte) error
}

// copyBucketName is the bucket EC2 copies an instance store-backed AMI's bundle into:
// "amis-for-ACCOUNT-in-REGION-" and a suffix of its own (the EC2 user guide's policy
// for CopyImage grants s3:CreateBucket and s3:PutObject on amis-for-ACCOUNT-in-REGION*).
func copyBucketName(account, region string) string {
	h := sha256.Sum256([]byte(account + "/" + region))
	return fmt.Sprintf("amis-for-%s-in-%s-%s", account, region, hex.EncodeToString(h[:])[:8])
}

// manifestPartNames reads the part file names of a manifest; the copy needs only those.
func manifestPartNames(data []byte) ([]string, error) {
	var m struct {
		Parts []struct {
			Filename string `xml:"filename"`
		} `xml:"image>parts>part"`
	}
	if err := xml.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range m.Parts {
		if p.Filename == "" || strings.Contains(p.Filename, "/") {
			return nil, fmt.Errorf("part file name %q is not a plain name", p.Filename)
		}
		out = append(out, p.Filename)
	}
	if len(out) == 0 {
		return nil, errors.New("the manifest lists no parts")
	}
	return out, nil
}

// copyBundle copies the manifest at loc (bucket/key) and its parts into the
// destination region's copy bucket under the same key, and returns the new location.
func (s *Server) copyBundle(ctx context.Context, loc, dstRegion string) (string, error) {
	w, ok := s.cfg.S3.(ObjectWriter)
	if !ok || s.cfg.S3 == nil {
		return "", errors.New("this simulator's S3 cannot write: copying an instance store-backed AMI needs it")
	}
	bucket, key, ok := strings.Cut(strings.TrimPrefix(loc, "/"), "/")
	if !ok {
		return "", fmt.Errorf("invalid manifest location %q", loc)
	}
	read := func(k string) ([]byte, error) {
		rc, err := s.cfg.S3.GetAsEC2(ctx, bucket, k)
		if err != nil {
			return nil, fmt.Errorf("reading s3://%s/%s: %w", bucket, k, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			return nil, fmt.Errorf("reading s3://%s/%s: %w", bucket, k, err)
		}
		return b, nil
	}
	manifest, err := read(key)
	if err != nil {
		return "", err
	}
	parts, err := manifestPartNames(manifest)
	if err != nil {
		return "", fmt.Errorf("manifest s3://%s/%s: %w", bucket, key, err)
	}
	dst := copyBucketName(s.cfg.AccountID, dstRegion)
	if err := w.EnsureBucket(ctx, dst, dstRegion); err != nil {
		return "", fmt.Errorf("creating the copy bucket %s in %s: %w", dst, dstRegion, err)
	}
	dir := path.Dir(key)
	for _, p := range parts {
		k := p
		if dir != "." {
			k = dir + "/" + p
		}
		b, err := read(k)
		if err != nil {
			return "", err
		}
		if err := w.PutAsEC2(ctx, dst, k, b); err != nil {
			return "", fmt.Errorf("writing s3://%s/%s: %w", dst, k, err)
		}
	}
	if err := w.PutAsEC2(ctx, dst, key, manifest); err != nil {
		return "", fmt.Errorf("writing s3://%s/%s: %w", dst, key, err)
	}
	return dst + "/" + key, nil
}

// EnsureBucket creates the bucket through the Front, so that its region is recorded.
func (r FrontReader) EnsureBucket(ctx context.Context, bucket, region string) error {
	if _, ok := r.Front.BucketRegion(bucket); ok {
		return nil
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(bucket)}
	if region != "us-east-1" {
		in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(region)}
	}
	_, err := r.Front.Client(region).CreateBucket(ctx, in)
	var owned *s3types.BucketAlreadyOwnedByYou
	if errors.As(err, &owned) {
		r.Front.SetBucketRegion(bucket, region)
		return nil
	}
	return err
}

// PutAsEC2 writes through the Front with the aws-exec-read ACL, which the Front records.
func (r FrontReader) PutAsEC2(ctx context.Context, bucket, key string, data []byte) error {
	reg, _ := r.Front.BucketRegion(bucket)
	if reg == "" {
		reg = r.Front.Backend().Region
	}
	_, err := r.Front.Client(reg).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ACL: s3types.ObjectCannedACLAwsExecRead})
	return err
}
