// Package s3bundle is the S3 side of a bundle for whoever holds the AWS credentials
// (the Packer plugin, never the instance): presigned part URLs, the manifest upload,
// reading and deleting a bundle, and the bucket preflight. Every object it writes
// carries the canned ACL aws-exec-read, which lets EC2 read it.
//
// The uploads themselves (PUTs to presigned URLs with retries) live in the
// credential-free package s3/presigned, which runs on the instance.
package s3bundle

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

// ACL is the canned ACL of every bundle object: owner full control, EC2 read.
const ACL = types.ObjectCannedACLAwsExecRead

// DefaultURLExpiry is how long a presigned part URL stays valid. Short: a URL is only
// asked for when the part is ready to go, and the agent asks again when one expires.
const DefaultURLExpiry = 15 * time.Minute

// Bucket is one bundle location: bucket, key prefix and the client of its region.
type Bucket struct {
	Client  *s3.Client
	presign *s3.PresignClient
	Name    string
	Prefix  string // key prefix without leading or trailing slash; may be empty
	Region  string
	// URLExpiry is the validity of presigned part URLs (default DefaultURLExpiry).
	URLExpiry time.Duration
}

// Options configure New.
type Options struct {
	// PathStyle forces path-style addressing (bucket in the path), for S3-compatible
	// servers reached by IP address or plain host name.
	PathStyle bool
}

// New returns the bundle location s3://bucket/prefix in region, with a client made
// from cfg (AWS_ENDPOINT_URL_S3 and the shared config's endpoint settings apply).
func New(cfg aws.Config, region, bucket, prefix string, opts Options) (*Bucket, error) {
	if err := CheckBucketName(bucket); err != nil {
		return nil, err
	}
	prefix = strings.Trim(prefix, "/")
	if strings.Contains(prefix, "//") {
		return nil, fmt.Errorf("s3 prefix %q has an empty path element", prefix)
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if region != "" {
			o.Region = region
		}
		o.UsePathStyle = opts.PathStyle
		// Only what S3 has always understood: the presigned PUTs must carry nothing
		// beyond Content-MD5 and the ACL, and S3-compatible servers differ on
		// flexible checksums.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		if o.Retryer != nil {
			o.Retryer = loggingRetryer{o.Retryer}
		}
	})
	if region == "" {
		region = cfg.Region
	}
	return &Bucket{Client: c, presign: s3.NewPresignClient(c), Name: bucket, Prefix: prefix, Region: region}, nil
}

// CheckBucketName checks the S3 naming rules that matter before any request.
func CheckBucketName(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("bucket %q: bucket names have 3 to 63 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("bucket %q: bucket names have only lowercase letters, digits, '-' and '.'", name)
		}
	}
	return nil
}

// Key is the object key of a bundle file (part or manifest) named name.
func (b *Bucket) Key(name string) string {
	if b.Prefix == "" {
		return name
	}
	return b.Prefix + "/" + name
}

// Location is bucket/key of a bundle file, as RegisterImage's ImageLocation wants it.
func (b *Bucket) Location(name string) string { return b.Name + "/" + b.Key(name) }

// String is the s3:// URL of the location, for messages.
func (b *Bucket) String() string {
	if b.Prefix == "" {
		return "s3://" + b.Name
	}
	return "s3://" + b.Name + "/" + b.Prefix
}

// ManifestName is the file name of a bundle's manifest.
func ManifestName(bundleName string) string { return bundleName + ".manifest.xml" }

// PresignPart returns a presigned PUT for the part named name whose body has MD5 sum:
// the ACL and Content-MD5 are signed in, so the URL stores exactly that body, readable
// by EC2, under exactly that key.
func (b *Bucket) PresignPart(ctx context.Context, name string, sum [16]byte) (*presigned.Request, error) {
	if err := bundle.CheckBaseName("part name", name); err != nil {
		return nil, err
	}
	expiry := b.URLExpiry
	if expiry <= 0 {
		expiry = DefaultURLExpiry
	}
	md := base64.StdEncoding.EncodeToString(sum[:])
	signedAt := time.Now()
	r, err := b.presign.PresignPutObject(ctx, &s3.PutObjectInput{
		Bucket:     aws.String(b.Name),
		Key:        aws.String(b.Key(name)),
		ACL:        ACL,
		ContentMD5: aws.String(md),
	}, s3.WithPresignExpires(expiry))
	if err != nil {
		return nil, fmt.Errorf("presigning upload of %s: %w", name, err)
	}
	h := r.SignedHeader.Clone()
	h.Del("Host")
	if h.Get("X-Amz-Acl") != string(ACL) || h.Get("Content-Md5") != md {
		// A future SDK that stops signing these would silently store parts EC2
		// cannot read: refuse instead.
		return nil, fmt.Errorf("presigning upload of %s: the SDK did not sign x-amz-acl and Content-MD5", name)
	}
	req := &presigned.Request{URL: r.URL, Header: h, Expires: signedAt.Add(expiry)}
	log.Printf("[DEBUG] s3: presigned PUT of part %s %s", name, presigned.Describe(req))
	return req, nil
}

// Put stores a small object (the manifest) with the bundle ACL and Content-MD5.
func (b *Bucket) Put(ctx context.Context, name string, data []byte, contentType string) error {
	sum := md5.Sum(data)
	_, err := b.Client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(b.Name),
		Key:           aws.String(b.Key(name)),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		ContentType:   aws.String(contentType),
		ACL:           ACL,
	})
	if err != nil {
		return fmt.Errorf("uploading %s/%s: %w", b, name, explain(err))
	}
	return nil
}

// PutManifest uploads a signed manifest (always last: EC2 may read the bundle as
// soon as the manifest exists) and returns its ImageLocation.
func (b *Bucket) PutManifest(ctx context.Context, m *bundle.Manifest) (string, error) {
	if m.Signature == "" {
		return "", errors.New("refusing to upload an unsigned manifest")
	}
	name := ManifestName(m.Name)
	if err := b.Put(ctx, name, m.Marshal(), "text/xml"); err != nil {
		return "", err
	}
	return b.Location(name), nil
}

// Open returns the content of a bundle file. It makes Bucket a bundle part source.
func (b *Bucket) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	out, err := b.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.Name), Key: aws.String(b.Key(name))})
	if err != nil {
		return nil, fmt.Errorf("downloading %s/%s: %w", b, name, explain(err))
	}
	return out.Body, nil
}

// OpenPart implements bundle.PartSource.
func (b *Bucket) OpenPart(name string) (io.ReadCloser, error) {
	return b.Open(context.Background(), name)
}

// GetManifest downloads and parses the manifest of bundle bundleName.
func (b *Bucket) GetManifest(ctx context.Context, bundleName string) (*bundle.Manifest, error) {
	rc, err := b.Open(ctx, ManifestName(bundleName))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("downloading %s/%s: %w", b, ManifestName(bundleName), err)
	}
	return bundle.ParseManifest(data)
}

// ACLGrants returns whether the object named name grants EC2 read (what
// aws-exec-read adds), by reading its ACL.
func (b *Bucket) ObjectACL(ctx context.Context, name string) (*s3.GetObjectAclOutput, error) {
	return b.Client.GetObjectAcl(ctx, &s3.GetObjectAclInput{Bucket: aws.String(b.Name), Key: aws.String(b.Key(name))})
}

// Delete removes the bundle files named names, 1000 per request. Missing objects
// count as deleted.
func (b *Bucket) Delete(ctx context.Context, names []string) error {
	var errs []error
	for len(names) > 0 {
		n := min(len(names), 1000)
		batch := names[:n]
		names = names[n:]
		objs := make([]types.ObjectIdentifier, len(batch))
		for i, name := range batch {
			objs[i] = types.ObjectIdentifier{Key: aws.String(b.Key(name))}
		}
		out, err := b.Client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(b.Name),
			Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)},
		})
		if err != nil {
			// Some S3-compatible servers lack DeleteObjects: one by one.
			var errs1 []error
			for _, name := range batch {
				if _, err := b.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.Name), Key: aws.String(b.Key(name))}); err != nil && !isNotFound(err) {
					errs1 = append(errs1, fmt.Errorf("deleting %s/%s: %w", b, name, explain(err)))
				}
			}
			errs = append(errs, errs1...)
			continue
		}
		for _, e := range out.Errors {
			errs = append(errs, fmt.Errorf("deleting s3://%s/%s: %s %s", b.Name, aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
		}
	}
	return errors.Join(errs...)
}

// List returns the names (relative to the prefix) of the objects whose name starts
// with namePrefix.
func (b *Bucket) List(ctx context.Context, namePrefix string) ([]string, error) {
	var names []string
	p := s3.NewListObjectsV2Paginator(b.Client, &s3.ListObjectsV2Input{Bucket: aws.String(b.Name), Prefix: aws.String(b.Key(namePrefix))})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", b, explain(err))
		}
		for _, o := range out.Contents {
			k := aws.ToString(o.Key)
			if b.Prefix != "" {
				k = strings.TrimPrefix(k, b.Prefix+"/")
			}
			names = append(names, k)
		}
	}
	return names, nil
}

// DeleteBundle deletes a bundle: the parts its manifest lists, then the manifest.
func (b *Bucket) DeleteBundle(ctx context.Context, bundleName string) error {
	m, err := b.GetManifest(ctx, bundleName)
	if err != nil {
		return err
	}
	var names []string
	for _, p := range m.Parts {
		if path.Base(p.Filename) != p.Filename {
			return fmt.Errorf("manifest of %s names part %q, not a plain file name", bundleName, p.Filename)
		}
		names = append(names, p.Filename)
	}
	if err := b.Delete(ctx, names); err != nil {
		return err
	}
	return b.Delete(ctx, []string{ManifestName(bundleName)})
}

func isNotFound(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound" || ae.ErrorCode() == "NoSuchBucket")
}

// explain adds what to do to the S3 errors users meet with bundles.
func explain(err error) error {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.ErrorCode() {
	case "AccessControlListNotSupported":
		return fmt.Errorf("%w (the bucket has ACLs disabled — Object Ownership \"Bucket owner enforced\"; EC2 reads bundles only through the aws-exec-read ACL: set Object Ownership to \"Object writer\" or \"Bucket owner preferred\", or use another bucket)", err)
	case "AccessDenied":
		return fmt.Errorf("%w (the credentials need s3:ListBucket on the bucket and s3:PutObject, s3:PutObjectAcl, s3:GetObject and s3:DeleteObject on the bundle prefix)", err)
	case "NoSuchBucket":
		return fmt.Errorf("%w (check the bucket name and the region)", err)
	case "PermanentRedirect", "AuthorizationHeaderMalformed":
		return fmt.Errorf("%w (the bucket is in another region than the client's: it must be in the region where the AMI is registered)", err)
	}
	return err
}

// Exists reports whether the bundle file named name exists.
func (b *Bucket) Exists(ctx context.Context, name string) (bool, error) {
	_, err := b.Client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.Name), Key: aws.String(b.Key(name))})
	if err == nil {
		return true, nil
	}
	if isNotFound(err) || httpStatus(err) == 404 {
		return false, nil
	}
	return false, fmt.Errorf("checking %s/%s: %w", b, name, explain(err))
}
