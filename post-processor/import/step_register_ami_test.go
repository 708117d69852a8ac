package importpp

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// lostRegister registers the AMI but loses EC2's answer, as a dropped connection does.
type lostRegister struct{ clients.Ec2Client }

func (l lostRegister) RegisterImage(ctx context.Context, in *ec2.RegisterImageInput, o ...func(*ec2.Options)) (*ec2.RegisterImageOutput, error) {
	if _, err := l.Ec2Client.RegisterImage(ctx, in, o...); err != nil {
		return nil, err
	}
	return nil, context.Canceled
}

// TestImportCleanupFindsLostRegistration runs the import's steps against the local
// EC2 simulator and S3: RegisterImage registers the AMI but its answer is lost. The
// import's cleanup (the builder's register step) finds the AMI by name and manifest
// location and deregisters it, and the bundle goes.
func TestImportCleanupFindsLostRegistration(t *testing.T) {
	backend, err := s3env.StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	front, err := s3env.NewFront(backend, s3env.FrontOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	creds := ec2sim.Credentials{AccessKeyID: "AKIATESTIMPORTSTEPS0", SecretAccessKey: "c2VjcmV0LWZvci10aGUtaW1wb3J0LXN0ZXBzLXRlc3Q"}
	sim, err := ec2sim.Start(ec2sim.Config{Credentials: creds, DataDir: t.TempDir(), S3: ec2sim.FrontReader{Front: front}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	t.Setenv("AWS_ENDPOINT_URL_EC2", sim.URL())
	t.Setenv("AWS_ENDPOINT_URL_STS", sim.URL())
	t.Setenv("AWS_ENDPOINT_URL_S3", front.URL())
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	client := ec2.NewFromConfig(cfg)

	disk := filepath.Join(t.TempDir(), "disk.raw")
	img := make([]byte, 1<<20)
	copy(img[446+4:], "\x83")
	copy(img[446+8:], "\x00\x08\x00\x00")
	copy(img[446+12:], "\x00\x08\x00\x00")
	copy(img[510:], "\x55\xaa")
	if err := os.WriteFile(disk, img, 0o644); err != nil {
		t.Fatal(err)
	}
	c := testConfig(t, map[string]interface{}{
		"ami_name": "lost-import", "s3_bucket": "import-lost", "s3_create_bucket": true, "s3_force_path_style": true,
		"ec2_cert_path": sim.EC2CertPath(), "image_path": disk,
		"access_key": creds.AccessKeyID, "secret_key": creds.SecretAccessKey,
	})
	st := new(multistep.BasicStateBag)
	st.Put(keyConfig, c)
	st.Put(keyAccessConfig, &c.AccessConfig)
	st.Put(keyEC2, clients.Ec2Client(lostRegister{client}))
	st.Put(keyAWSConfig, &cfg)
	st.Put(keyUI, &packersdk.MockUi{})
	st.Put(keyRegion, "us-east-1")
	upload := &stepBundleUpload{}
	register := registerStep(c)
	for _, s := range []multistep.Step{
		&stepInspectImage{ImagePath: c.ImagePath},
		&steps.StepAccountID{Options: &c.Options},
		&steps.StepPreflightBucket{Options: &c.Options},
		upload,
	} {
		if s.Run(context.Background(), st) != multistep.ActionContinue {
			t.Fatalf("%T: %v", s, st.Get(keyError))
		}
	}
	if register.Run(context.Background(), st) != multistep.ActionHalt {
		t.Fatal("a RegisterImage without answer did not halt the import")
	}
	images := func() []ec2types.Image {
		out, err := client.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"self"},
			Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{"lost-import"}}}})
		if err != nil {
			t.Fatal(err)
		}
		return out.Images
	}
	if len(images()) != 1 {
		t.Fatal("the simulator did not register the AMI")
	}
	st.Put(multistep.StateHalted, true) // as the runner does after a halt
	register.Cleanup(st)
	upload.Cleanup(st)
	if imgs := images(); len(imgs) != 0 {
		t.Errorf("the import's cleanup left the AMI whose RegisterImage answer was lost: %s", aws.ToString(imgs[0].ImageId))
	}
	if objs, _ := front.Objects(context.Background(), "import-lost", ""); len(objs) != 0 {
		t.Errorf("left in S3: %v", objs)
	}
}
