package ebspp

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// sourceImage is the instance store-backed AMI being converted, with what the
// conversion needs from it, all checked before anything is launched.
type sourceImage struct {
	Image       *ec2types.Image
	Bucket      *s3bundle.Bucket // where the manifest and parts are
	ManifestXML []byte
	Manifest    *bundle.Manifest
	Key         bundle.Key
}

// stepInspectSource finds the AMI to convert and checks, before anything is
// launched: it is instance store-backed, its manifest is readable in S3, the private
// key unwraps the manifest's user key, and a paravirtual AMI has its kernel.
type stepInspectSource struct {
	AMI string // from source_ami or the previous artifact
}

func (s *stepInspectSource) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	client := ec2Full(state)
	out, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{s.AMI}})
	if err != nil {
		return halt(state, fmt.Errorf("describing the source AMI %s: %w", s.AMI, err))
	}
	if len(out.Images) != 1 {
		return halt(state, fmt.Errorf("source AMI %s not found in %s", s.AMI, stringOf(state, keyRegion)))
	}
	img := &out.Images[0]
	if img.RootDeviceType != ec2types.DeviceTypeInstanceStore {
		return halt(state, fmt.Errorf("source AMI %s is %s-backed, not instance store-backed: there is nothing to convert (use it as it is, or copy it)", s.AMI, img.RootDeviceType))
	}
	if img.VirtualizationType == ec2types.VirtualizationTypeParavirtual && aws.ToString(img.KernelId) == "" {
		return halt(state, fmt.Errorf("source AMI %s is paravirtual without a kernel id: an EBS-backed paravirtual AMI needs its kernel (AKI); register the source with ami_kernel_id", s.AMI))
	}
	loc := aws.ToString(img.ImageLocation)
	bucketName, key, ok := strings.Cut(loc, "/")
	if !ok || !strings.HasSuffix(key, ".manifest.xml") {
		return halt(state, fmt.Errorf("source AMI %s has image location %q, not bucket/.../name.manifest.xml", s.AMI, loc))
	}
	prefix, name := "", key
	if i := strings.LastIndex(key, "/"); i >= 0 {
		prefix, name = key[:i], key[i+1:]
	}
	awsCfg, err := c.Config(ctx)
	if err != nil {
		return halt(state, fmt.Errorf("creating the AWS configuration: %w", err))
	}
	b, err := s3bundle.New(*awsCfg, stringOf(state, keyRegion), bucketName, prefix, s3bundle.Options{PathStyle: c.S3ForcePathStyle})
	if err != nil {
		return halt(state, err)
	}
	rc, err := b.Open(ctx, name)
	if err != nil {
		return halt(state, fmt.Errorf("reading the manifest of source AMI %s: %w", s.AMI, err))
	}
	xml, err := io.ReadAll(io.LimitReader(rc, 4<<20))
	rc.Close()
	if err != nil {
		return halt(state, fmt.Errorf("reading the manifest s3://%s: %w", loc, err))
	}
	m, err := bundle.ParseManifest(xml)
	if err != nil {
		return halt(state, fmt.Errorf("the manifest s3://%s of source AMI %s: %w", loc, s.AMI, err))
	}
	priv, err := bundle.LoadPrivateKey(c.X509KeyPath)
	if err != nil {
		return halt(state, fmt.Errorf("x509_key_path: %w", err))
	}
	k, err := driver.UnwrapManifestKey(m, priv)
	if err != nil {
		return halt(state, fmt.Errorf("x509_key_path %s: %w", c.X509KeyPath, err))
	}
	state.Put(keySource, &sourceImage{Image: img, Bucket: b, ManifestXML: xml, Manifest: m, Key: k})
	ui(state).Sayf("Converting %s (%s, %s): bundle s3://%s, %d parts, image %d MiB", s.AMI, aws.ToString(img.Name), img.VirtualizationType, loc, len(m.Parts), m.Size>>20)
	return multistep.ActionContinue
}

func (s *stepInspectSource) Cleanup(multistep.StateBag) {}
