package instancestore

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// TestAcceptanceAWS builds the instance store-source examples (example/aws-instance-store)
// against your AWS account, checks the AMIs and removes them and their bundles again. It costs money
// (an m3.medium and a c3.large for some minutes, S3 storage while it runs) and never
// runs in CI. To run it:
//
//	export INSTANCESTORE_AWS_ACC=1          # the gate
//	export AWS_PROFILE=my-profile           # or any credentials the amazon plugin takes
//	export AWS_REGION=us-east-1
//	export INSTANCESTORE_AWS_BUCKET=my-bundles   # in AWS_REGION, ACLs enabled
//	export INSTANCESTORE_AWS_ONLY=amazon-linux   # optional: one of amazon-linux, ubuntu-hvm
//	go test -run TestAcceptanceAWS -timeout 120m -v ./builder/instancestore/
func TestAcceptanceAWS(t *testing.T) {
	if os.Getenv("INSTANCESTORE_AWS_ACC") == "" {
		t.Skip("real-AWS acceptance test: set INSTANCESTORE_AWS_ACC=1, AWS credentials, AWS_REGION and INSTANCESTORE_AWS_BUCKET (see the comment of TestAcceptanceAWS)")
	}
	bucket := os.Getenv("INSTANCESTORE_AWS_BUCKET")
	region := os.Getenv("AWS_REGION")
	if bucket == "" || region == "" {
		t.Fatal("INSTANCESTORE_AWS_BUCKET and AWS_REGION are required")
	}
	e := setupPacker(t)
	ctx := context.Background()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		t.Fatal(err)
	}
	client := ec2.NewFromConfig(cfg)

	sources := []string{"amazon-linux", "ubuntu-hvm"}
	if only := os.Getenv("INSTANCESTORE_AWS_ONLY"); only != "" {
		sources = []string{only}
	}
	for _, src := range sources {
		t.Run(src, func(t *testing.T) {
			// Work on a copy so that the manifest files land in a temporary directory.
			dir := t.TempDir()
			for _, f := range []string{"plugins.pkr.hcl", "amazon-linux.pkr.hcl", "ubuntu-hvm.pkr.hcl"} {
				data, err := os.ReadFile(filepath.Join(e.Root, "example/aws-instance-store", f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if out, err := e.run(t, dir, nil, "init", "."); err != nil {
				t.Fatalf("packer init: %v\n%s", err, out)
			}
			cmd := exec.Command(e.Bin, "build", "-color=false", "-only=instancestore."+src, "-var", "region="+region, "-var", "s3_bucket="+bucket, "-machine-readable", ".")
			cmd.Dir = dir
			cmd.Env = append(append(os.Environ(), e.Env...), "PACKER_LOG=1", "PACKER_LOG_PATH="+filepath.Join(dir, "packer.log"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("packer build: %v\n%s", err, out)
			}
			// The artifact id from the machine-readable output: region:ami-id.
			var artifact string
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Split(line, ",")
				if len(f) >= 6 && f[2] == "artifact" && f[4] == "id" {
					artifact = f[5]
				}
			}
			r, ami, ok := strings.Cut(artifact, ":")
			if !ok || r != region {
				t.Fatalf("artifact id %q\n%s", artifact, out)
			}
			imgs, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
			if err != nil || len(imgs.Images) != 1 {
				t.Fatalf("DescribeImages %s: %v", ami, err)
			}
			img := imgs.Images[0]
			t.Cleanup(func() { destroyAWS(t, cfg, client, img) })
			if img.RootDeviceType != ec2types.DeviceTypeInstanceStore || img.State != ec2types.ImageStateAvailable ||
				!strings.HasPrefix(aws.ToString(img.ImageLocation), bucket+"/") {
				t.Errorf("AMI %s: root %s state %s location %s", ami, img.RootDeviceType, img.State, aws.ToString(img.ImageLocation))
			}
			if src == "amazon-linux" {
				data, err := os.ReadFile(filepath.Join(dir, "amazon-linux-manifest.json"))
				var m struct {
					Builds []struct {
						CustomData map[string]string `json:"custom_data"`
					} `json:"builds"`
				}
				if err != nil || json.Unmarshal(data, &m) != nil || len(m.Builds) != 1 ||
					m.Builds[0].CustomData["bundle_manifest"] != "s3://"+aws.ToString(img.ImageLocation) {
					t.Errorf("manifest post-processor output %s: %v", data, err)
				}
			}
		})
	}
}

// destroyAWS deregisters img and deletes its bundle.
func destroyAWS(t *testing.T, cfg aws.Config, client *ec2.Client, img ec2types.Image) {
	ctx := context.Background()
	if _, err := client.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: img.ImageId}); err != nil {
		t.Errorf("deregister %s yourself: %v", aws.ToString(img.ImageId), err)
	}
	bucket, prefix, name, err := parseImageLocation(aws.ToString(img.ImageLocation))
	if err == nil {
		var b *s3bundle.Bucket
		if b, err = s3bundle.New(cfg, cfg.Region, bucket, prefix, s3bundle.Options{}); err == nil {
			err = b.DeleteBundle(ctx, name)
		}
	}
	if err != nil {
		t.Errorf("delete the bundle s3://%s yourself: %v", aws.ToString(img.ImageLocation), err)
	}
}
