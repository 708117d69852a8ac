package s3bundle

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

// PresignGetPart returns a presigned GET of the bundle file named name (a part of an
// existing bundle, for an agent that writes it onto a volume). It expires after
// URLExpiry: the agent asks for each URL just before it reads the part.
func (b *Bucket) PresignGetPart(ctx context.Context, name string) (*presigned.Request, error) {
	if err := bundle.CheckBaseName("part name", name); err != nil {
		return nil, err
	}
	expiry := b.URLExpiry
	if expiry <= 0 {
		expiry = DefaultURLExpiry
	}
	signedAt := time.Now()
	r, err := b.presign.PresignGetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(b.Name),
		Key:    aws.String(b.Key(name)),
	}, s3.WithPresignExpires(expiry))
	if err != nil {
		return nil, fmt.Errorf("presigning download of %s: %w", name, err)
	}
	h := r.SignedHeader.Clone()
	h.Del("Host")
	req := &presigned.Request{URL: r.URL, Header: h, Expires: signedAt.Add(expiry)}
	log.Printf("[DEBUG] s3: presigned GET of part %s %s", name, presigned.Describe(req))
	return req, nil
}
