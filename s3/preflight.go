package s3bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ErrNoBucket is Preflight's error when the bucket does not exist and Create is unset.
var ErrNoBucket = errors.New("does not exist")

// PreflightOptions configure Preflight.
type PreflightOptions struct {
	// Create makes the bucket (in the bucket's region, with ACLs enabled) when it
	// does not exist.
	Create bool
}

// Preflight checks, before anything is bundled, that the bundle can be stored where
// EC2 will read it: the bucket exists (or is created) in b.Region, it has ACLs enabled
// (Object Ownership is not "bucket owner enforced"), and the credentials can put an
// object with the aws-exec-read ACL (a probe object, deleted again). Each failure says
// what to change. It returns whether the bucket was created.
func (b *Bucket) Preflight(ctx context.Context, opts PreflightOptions) (created bool, err error) {
	head, err := b.Client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.Name)})
	if err != nil {
		log.Printf("[INFO] s3: preflight of s3://%s: HeadBucket: %v", b.Name, err)
	}
	switch {
	case err == nil:
		if r := aws.ToString(head.BucketRegion); r != "" && b.Region != "" && r != b.Region {
			return false, fmt.Errorf("bucket %q is in region %s, not %s: EC2 registers bundles only from a bucket in the AMI's region", b.Name, r, b.Region)
		}
	case httpStatus(err) == http.StatusNotFound:
		if !opts.Create {
			return false, fmt.Errorf("bucket %q %w in %s", b.Name, ErrNoBucket, b.Region)
		}
		if err := b.create(ctx); err != nil {
			return false, err
		}
		created = true
	case httpStatus(err) == http.StatusMovedPermanently || httpStatus(err) == http.StatusBadRequest && bucketRegion(err) != "":
		// S3 answers a request signed for the wrong region with 301 or 400 and the
		// bucket's region in a header.
		r := bucketRegion(err)
		if r == "" {
			r = "another region"
		}
		return false, fmt.Errorf("bucket %q is in %s, not %s: EC2 registers bundles only from a bucket in the AMI's region", b.Name, r, b.Region)
	case httpStatus(err) == http.StatusForbidden:
		return false, fmt.Errorf("bucket %q: access denied (it belongs to another account, or the credentials lack s3:ListBucket): %w", b.Name, err)
	default:
		return false, fmt.Errorf("checking bucket %q: %w", b.Name, err)
	}
	if !created {
		if err := b.checkRegion(ctx); err != nil {
			return false, err
		}
		if err := b.checkOwnership(ctx); err != nil {
			return false, err
		}
		if err := b.checkEncryption(ctx); err != nil {
			return false, err
		}
	}
	return created, b.probe(ctx)
}

func (b *Bucket) create(ctx context.Context) error {
	in := &s3.CreateBucketInput{
		Bucket: aws.String(b.Name),
		// New buckets default to "bucket owner enforced" (no ACLs) since 2023.
		ObjectOwnership: types.ObjectOwnershipObjectWriter,
	}
	if b.Region != "" && b.Region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(b.Region)}
	}
	if _, err := b.Client.CreateBucket(ctx, in); err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "BucketAlreadyOwnedByYou" {
			return nil
		}
		return fmt.Errorf("creating bucket %q in %s: %w", b.Name, b.Region, err)
	}
	return nil
}

// checkRegion asks for the bucket's location when HEAD did not say it.
func (b *Bucket) checkRegion(ctx context.Context) error {
	if b.Region == "" {
		return nil
	}
	out, err := b.Client.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String(b.Name)})
	if err != nil {
		// Not allowed to ask: the probe upload below still fails on a wrong region.
		log.Printf("[INFO] s3: preflight of s3://%s: region check skipped, GetBucketLocation failed: %v", b.Name, err)
		return nil
	}
	r := string(out.LocationConstraint)
	switch r {
	case "":
		r = "us-east-1"
	case "EU":
		r = "eu-west-1"
	}
	if r != b.Region {
		return fmt.Errorf("bucket %q is in region %s, not %s: EC2 registers bundles only from a bucket in the AMI's region", b.Name, r, b.Region)
	}
	return nil
}

func (b *Bucket) checkOwnership(ctx context.Context) error {
	out, err := b.Client.GetBucketOwnershipControls(ctx, &s3.GetBucketOwnershipControlsInput{Bucket: aws.String(b.Name)})
	if err != nil {
		// No ownership controls (ACLs enabled, older buckets), no permission to read
		// them, or a server without the API: the probe upload decides.
		log.Printf("[INFO] s3: preflight of s3://%s: ACL check skipped, GetBucketOwnershipControls failed: %v", b.Name, err)
		return nil
	}
	if out.OwnershipControls == nil {
		return nil
	}
	for _, r := range out.OwnershipControls.Rules {
		if r.ObjectOwnership == types.ObjectOwnershipBucketOwnerEnforced {
			return fmt.Errorf("bucket %q has ACLs disabled (Object Ownership \"Bucket owner enforced\"): EC2 reads bundle objects only through the aws-exec-read ACL; set Object Ownership to \"Object writer\" or \"Bucket owner preferred\" (aws s3api put-bucket-ownership-controls --bucket %s --ownership-controls Rules=[{ObjectOwnership=ObjectWriter}]) or use another bucket", b.Name, b.Name)
		}
	}
	return nil
}

// checkEncryption refuses a bucket whose default encryption is SSE-KMS: EC2 reads
// bundle parts as its own principal, which has no kms:Decrypt on the customer's key, so
// RegisterImage of such a bundle fails. Setting SSE-S3 on each object instead would
// work only where no bucket policy requires KMS, and would silently override what the
// bucket's owner chose; so the preflight says how to fix the bucket instead.
func (b *Bucket) checkEncryption(ctx context.Context) error {
	out, err := b.Client.GetBucketEncryption(ctx, &s3.GetBucketEncryptionInput{Bucket: aws.String(b.Name)})
	if err != nil || out.ServerSideEncryptionConfiguration == nil {
		// No default encryption configured, no permission to read it, or a server
		// without the API: nothing to say.
		return nil
	}
	for _, r := range out.ServerSideEncryptionConfiguration.Rules {
		d := r.ApplyServerSideEncryptionByDefault
		if d == nil {
			continue
		}
		if alg := string(d.SSEAlgorithm); strings.HasPrefix(alg, "aws:kms") {
			return fmt.Errorf("bucket %q encrypts new objects with %s by default: EC2 cannot read bundle parts encrypted with a KMS key, so RegisterImage would fail; use a bucket with SSE-S3 (AES256) default encryption (aws s3api put-bucket-encryption --bucket %s --server-side-encryption-configuration '{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"AES256\"}}]}'), or another bucket", b.Name, alg, b.Name)
		}
	}
	return nil
}

// probe puts and deletes a tiny object with the bundle ACL under the prefix.
func (b *Bucket) probe(ctx context.Context) error {
	var r [8]byte
	_, _ = rand.Read(r[:])
	name := ".instancestore-preflight-" + hex.EncodeToString(r[:])
	log.Printf("[DEBUG] s3: preflight of s3://%s: storing the probe object %s with the %s ACL", b.Name, b.Key(name), ACL)
	if err := b.Put(ctx, name, bytes.Repeat([]byte("x"), 16), "text/plain"); err != nil {
		return fmt.Errorf("preflight: cannot store objects with the aws-exec-read ACL: %w", err)
	}
	if err := b.Delete(ctx, []string{name}); err != nil {
		return fmt.Errorf("preflight: cannot delete the probe object (the plugin deletes uploaded parts when a build fails, which needs s3:DeleteObject): %w", err)
	}
	return nil
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return 0
}

func bucketRegion(err error) string {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}
