package ec2sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// BenchmarkRegisterImage measures instance-store registration (manifest and parts
// read through the S3 front as EC2, decrypted, checked and unbundled) of a 64 MiB
// image of incompressible data: MB/s of image registered.
func BenchmarkRegisterImage(b *testing.B) {
	testroot.Require(b)
	backend, err := s3env.StartGoFakeS3()
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	front, err := s3env.NewFront(backend, s3env.FrontOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer front.Close()
	srv, err := Start(Config{Credentials: testCreds, DataDir: b.TempDir(), S3: FrontReader{Front: front}, Logf: func(string, ...any) {}})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	const size = 64 << 20
	img := filepath.Join(b.TempDir(), "img")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		b.Fatal(err)
	}
	im, err := bundle.OpenImage(img)
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	key, _ := bundle.NewKey()
	parts := b.TempDir()
	res, err := bundle.Write(context.Background(), im, bundle.WriterConfig{Name: "bench", Key: key, Level: 1}, bundle.DirSink(parts))
	if err != nil {
		b.Fatal(err)
	}
	ec2Cert, _ := bundle.LoadCertificate(srv.EC2CertPath())
	userCert, userKey, _ := bundle.NewThrowawayUser()
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: srv.AccountID()}, key, ec2Cert, userCert)
	if err != nil {
		b.Fatal(err)
	}
	m.Sign(userKey)
	ctx := context.Background()
	s3c := front.Client("us-east-1")
	s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("bench")})
	put := func(name string, body []byte) {
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bench"), Key: aws.String("b/" + name), Body: bytes.NewReader(body), ACL: s3types.ObjectCannedACLAwsExecRead}); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range m.Parts {
		body, _ := os.ReadFile(filepath.Join(parts, p.Filename))
		put(p.Filename, body)
	}
	put("bench.manifest.xml", m.Marshal())
	c := ec2Client(srv, testCreds, "us-east-1")
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, err := c.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String(fmt.Sprintf("bench-%d", i)), ImageLocation: aws.String("bench/b/bench.manifest.xml"), Architecture: types.ArchitectureValuesX8664})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: out.ImageId})
		b.StartTimer()
	}
}
