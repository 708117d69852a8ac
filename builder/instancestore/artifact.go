package instancestore

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// ArtifactStateManifests is the artifact state key of the manifest location
// ("bucket/key.manifest.xml") of the AMI in each region, a map[string]string.
const ArtifactStateManifests = "manifests"

// Artifact is the result of a build: instance store-backed AMIs, one per region, the
// bundle they were registered from, and with ebs_copy the EBS-backed AMI of the same
// image in the build region.
type Artifact struct {
	// Amis maps region to AMI id.
	Amis map[string]string
	// EBSCopy is ebs_copy's AMI (nil without ebs_copy).
	EBSCopy *EBSCopyAMI
	// Manifests maps region to the manifest location EC2 reports for the AMI.
	Manifests map[string]string
	// Bundle is the uploaded bundle in the build region's bucket.
	Bundle *bundleLocation
	// StateData holds generated_data for post-processors.
	StateData map[string]interface{}

	Config *aws.Config
	Access *awscommon.AccessConfig
}

// EBSCopyAMI is the EBS-backed AMI ebs_copy registered, and its root snapshot.
type EBSCopyAMI struct {
	Region, AMI, Snapshot string
}

var _ packersdk.Artifact = new(Artifact)

func (a *Artifact) BuilderId() string { return BuilderId }

// Files is empty: the AMIs live in EC2 and S3.
func (a *Artifact) Files() []string { return nil }

func (a *Artifact) regions() []string {
	rs := make([]string, 0, len(a.Amis))
	for r := range a.Amis {
		rs = append(rs, r)
	}
	sort.Strings(rs)
	return rs
}

// Id is "region:ami-id[,region:ami-id...]" as the amazon builders' (sorted by
// region), the instance store-backed AMIs first, then ebs_copy's AMI:
// "us-east-1:ami-IS,us-west-2:ami-IS2,us-east-1:ami-EBS". A consumer that takes the
// first AMI of a region (as the instancestore-ebs post-processor does) gets the
// instance store-backed one.
func (a *Artifact) Id() string {
	parts := make([]string, 0, len(a.Amis)+1)
	for _, r := range a.regions() {
		parts = append(parts, r+":"+a.Amis[r])
	}
	if a.EBSCopy != nil {
		parts = append(parts, a.EBSCopy.Region+":"+a.EBSCopy.AMI)
	}
	return strings.Join(parts, ",")
}

func (a *Artifact) String() string {
	var b strings.Builder
	b.WriteString("Instance store-backed AMIs were created:\n")
	for _, r := range a.regions() {
		fmt.Fprintf(&b, "%s: %s", r, a.Amis[r])
		if m := a.Manifests[r]; m != "" {
			fmt.Fprintf(&b, " (manifest s3://%s)", m)
		}
		b.WriteString("\n")
	}
	if e := a.EBSCopy; e != nil {
		fmt.Fprintf(&b, "EBS-backed AMI (ebs_copy):\n%s: %s (snapshot %s)\n", e.Region, e.AMI, e.Snapshot)
	}
	return b.String()
}

func (a *Artifact) State(name string) interface{} {
	if v, ok := a.StateData[name]; ok {
		return v
	}
	switch name {
	case "atlas.artifact.metadata":
		md := make(map[string]string, len(a.Amis))
		for r, id := range a.Amis {
			md["region."+r] = id
		}
		if e := a.EBSCopy; e != nil {
			md["ebs_copy.region."+e.Region] = e.AMI
		}
		return md
	case registryimage.ArtifactStateURI:
		return a.hcpImages()
	case ArtifactStateManifests:
		return a.Manifests
	}
	return nil
}

// hcpImages is the HCP Packer registry metadata: one image per region, with the
// source AMI and the manifest location as labels.
func (a *Artifact) hcpImages() []*registryimage.Image {
	data, _ := a.StateData["generated_data"].(map[string]interface{})
	source, _ := data["SourceAMI"].(string)
	images := make([]*registryimage.Image, 0, len(a.Amis))
	for _, r := range a.regions() {
		img := &registryimage.Image{
			ImageID:        a.Amis[r],
			ProviderName:   "aws",
			ProviderRegion: r,
			SourceImageID:  source,
			Labels:         map[string]string{"root_device_type": "instance-store"},
		}
		if m := a.Manifests[r]; m != "" {
			img.Labels["manifest_location"] = m
		}
		if name, _ := data["SourceAMIName"].(string); name != "" {
			img.Labels["source_ami_name"] = name
		}
		images = append(images, img)
	}
	// HCP Packer lists each image of a build; the labels tell the two kinds apart.
	if e := a.EBSCopy; e != nil {
		img := &registryimage.Image{
			ImageID:        e.AMI,
			ProviderName:   "aws",
			ProviderRegion: e.Region,
			SourceImageID:  source,
			Labels:         map[string]string{"root_device_type": "ebs", "ebs_copy": "true", "snapshot_id": e.Snapshot},
		}
		if name, _ := data["SourceAMIName"].(string); name != "" {
			img.Labels["source_ami_name"] = name
		}
		images = append(images, img)
	}
	return images
}

// Destroy deregisters the AMIs in every region and deletes the bundle's objects.
func (a *Artifact) Destroy() error {
	ctx := context.Background()
	var errs []error
	for _, r := range a.regions() {
		id := a.Amis[r]
		log.Printf("Deregistering AMI %s in %s", id, r)
		var client clients.Ec2Client = ec2.NewFromConfig(*a.Config, func(o *ec2.Options) { o.Region = r })
		if a.Access != nil {
			c, err := a.Access.NewEC2Client(ctx)
			if err == nil && r == a.Config.Region {
				client = c // keeps custom_endpoint_ec2 for the build region
			}
		}
		if _, err := client.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
			errs = append(errs, fmt.Errorf("deregistering AMI %s in %s: %w", id, r, err))
		}
	}
	if e := a.EBSCopy; e != nil {
		errs = append(errs, a.destroyEBSCopy(ctx, e)...)
	}
	if a.Bundle != nil {
		b, err := s3bundle.New(*a.Config, a.Bundle.Region, a.Bundle.Bucket, a.Bundle.Prefix, s3bundle.Options{PathStyle: a.Bundle.PathStyle})
		if err == nil {
			err = b.Delete(ctx, a.Bundle.Objects)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("deleting the bundle s3://%s: %w", a.Bundle.ManifestLocation, err))
		}
	}
	return errors.Join(errs...)
}

// destroyEBSCopy deregisters ebs_copy's AMI and deletes its snapshot.
func (a *Artifact) destroyEBSCopy(ctx context.Context, e *EBSCopyAMI) []error {
	var client clients.Ec2Client = ec2.NewFromConfig(*a.Config, func(o *ec2.Options) { o.Region = e.Region })
	if a.Access != nil && e.Region == a.Config.Region {
		if c, err := a.Access.NewEC2Client(ctx); err == nil {
			client = c
		}
	}
	log.Printf("Deregistering AMI %s in %s and deleting snapshot %s", e.AMI, e.Region, e.Snapshot)
	if _, err := client.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(e.AMI)}); err != nil {
		return []error{fmt.Errorf("deregistering AMI %s in %s: %w", e.AMI, e.Region, err)}
	}
	if e.Snapshot == "" {
		return nil
	}
	if _, err := client.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(e.Snapshot)}); err != nil {
		return []error{fmt.Errorf("deleting snapshot %s in %s: %w", e.Snapshot, e.Region, err)}
	}
	return nil
}
