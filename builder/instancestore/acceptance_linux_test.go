//go:build linux

package instancestore

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/cmdlines"
	"github.com/instancestore/packer-plugin-instancestore/internal/launch"
	"github.com/instancestore/packer-plugin-instancestore/internal/packertest"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// The acceptance tests run the real `packer build` of example/local against the local
// EC2 + S3 environment (localenv), in this test process: launch, a shell
// provisioner writes a file, bundle with the agent, upload, register; then the new AMI
// is launched in the simulator and the file is read over SSH. They need root
// (network namespaces, loop mounts) and never skip under `make test`
// (which sets PACKER_ACC=1).

type accEnv struct {
	*packerEnv
	local *localenv.Env
	vars  map[string]string
	ec2   *ec2.Client
	s3    *s3.Client
}

var (
	localOnce sync.Once
	localErr  error
	localVal  *localenv.Env
)

// startLocal brings the local environment up once for the test binary; TestMain takes
// it down.
func startLocal(t *testing.T) *accEnv {
	t.Helper()
	testroot.Acceptance(t)
	testroot.Require(t)
	p := setupPacker(t)
	localOnce.Do(func() {
		dir, err := os.MkdirTemp("", "instancestore-acc-localenv-")
		if err != nil {
			localErr = err
			return
		}
		localVal, localErr = localenv.Start(context.Background(), localenv.Options{Dir: dir, S3: "minio"})
	})
	if localErr != nil {
		t.Fatalf("starting the local environment: %v", localErr)
	}
	v := map[string]string{}
	for _, kv := range localVal.Vars() {
		v[kv.Name] = kv.Value
	}
	cfg := aws.Config{Region: v["AWS_REGION"], Credentials: credentials.NewStaticCredentialsProvider(v["AWS_ACCESS_KEY_ID"], v["AWS_SECRET_ACCESS_KEY"], "")}
	return &accEnv{
		packerEnv: p,
		local:     localVal,
		vars:      v,
		ec2:       ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(v["AWS_ENDPOINT_URL_EC2"]) }),
		s3: s3.NewFromConfig(cfg, func(o *s3.Options) {
			o.BaseEndpoint = aws.String(v["AWS_ENDPOINT_URL_S3"])
			o.UsePathStyle = true
		}),
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if localVal != nil {
		if err := localVal.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the local environment:", err)
		}
		os.RemoveAll(localVal.Dir)
	}
	packertest.Cleanup()
	os.Exit(code)
}

func (a *accEnv) envList(extra ...string) []string {
	var env []string
	for k, v := range a.vars {
		env = append(env, k+"="+v)
	}
	return append(env, extra...)
}

// build runs `packer build` of example/local with the given bucket. When cancelAt is
// not empty, SIGINT is sent as soon as a line of packer's output contains it. It
// returns packer's output and its exit error.
func (a *accEnv) build(t *testing.T, outDir, bucket, cancelAt string, vars ...string) (string, error, bool) {
	t.Helper()
	return a.buildTemplate(t, filepath.Join(a.Root, "example", "local"), outDir, bucket, cancelAt, vars...)
}

// buildTemplate is build of the template directory dir.
func (a *accEnv) buildTemplate(t *testing.T, dir, outDir, bucket, cancelAt string, vars ...string) (string, error, bool) {
	t.Helper()
	if out, err := a.run(t, dir, a.envList(), "init", "."); err != nil {
		t.Fatalf("packer init: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	args := []string{"-var", "output_dir=" + outDir, "-var", "s3_bucket=" + bucket}
	for _, v := range vars {
		args = append(args, "-var", v)
	}
	r := a.Build(ctx, t, dir, a.envList("PACKER_LOG=1", "PACKER_LOG_PATH="+filepath.Join(outDir, "packer.log")), cancelAt, append(args, ".")...)
	return r.Output, r.Err, r.Interrupted
}

func (a *accEnv) failWithLog(t *testing.T, outDir, out string, err error) {
	t.Helper()
	log, _ := os.ReadFile(filepath.Join(outDir, "packer.log"))
	if len(log) > 20000 {
		log = log[len(log)-20000:]
	}
	t.Fatalf("packer build: %v\n%s\n--- end of packer.log ---\n%s", err, out, log)
}

func TestAcceptanceLocalBuild(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	outDir := t.TempDir()
	bucket := "acc-build"

	out, err, _ := a.build(t, outDir, bucket, "")
	if err != nil {
		a.failWithLog(t, outDir, out, err)
	}
	t.Logf("packer build output:\n%s", out)

	// The manifest post-processor saw the artifact.
	data, err := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Builds []struct {
			BuilderType string            `json:"builder_type"`
			ArtifactID  string            `json:"artifact_id"`
			CustomData  map[string]string `json:"custom_data"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(data, &manifest); err != nil || len(manifest.Builds) != 1 {
		t.Fatalf("packer-manifest.json: %v\n%s", err, data)
	}
	b := manifest.Builds[0]
	region, amiID, ok := strings.Cut(b.ArtifactID, ":")
	if !ok || region != a.vars["AWS_REGION"] || !strings.HasPrefix(amiID, "ami-") || strings.Contains(amiID, ",") {
		t.Fatalf("artifact id %q, want %s:ami-...", b.ArtifactID, a.vars["AWS_REGION"])
	}
	source := a.vars["INSTANCESTORE_SOURCE_AMI"]
	if b.CustomData["source_ami"] != source || !strings.HasPrefix(b.CustomData["bundle_manifest"], "s3://"+bucket+"/instancestore/") ||
		!strings.HasSuffix(b.CustomData["bundle_manifest"], ".manifest.xml") {
		t.Errorf("manifest custom_data %v: want source_ami %s and bundle_manifest s3://%s/instancestore/...manifest.xml", b.CustomData, source, bucket)
	}
	// The shell-local post-processor saw the generated data.
	gen, err := os.ReadFile(filepath.Join(outDir, "generated-data.txt"))
	if err != nil || strings.TrimSpace(string(gen)) != source+" "+b.CustomData["bundle_manifest"] {
		t.Errorf("generated-data.txt = %q (%v), want %q", gen, err, source+" "+b.CustomData["bundle_manifest"])
	}
	if !strings.Contains(out, "--> instancestore.local: Instance store-backed AMIs were created:") || !strings.Contains(out, region+": "+amiID) {
		t.Errorf("packer's artifact summary is missing from the output")
	}

	// The AMI as EC2 reports it.
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{amiID}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("DescribeImages %s: %v", amiID, err)
	}
	img := imgs.Images[0]
	wantLoc := strings.TrimPrefix(b.CustomData["bundle_manifest"], "s3://")
	if img.RootDeviceType != ec2types.DeviceTypeInstanceStore || aws.ToString(img.ImageLocation) != wantLoc ||
		img.State != ec2types.ImageStateAvailable || img.VirtualizationType != ec2types.VirtualizationTypeParavirtual ||
		img.Architecture != ec2types.ArchitectureValuesX8664 {
		t.Errorf("AMI %s: root %s location %s state %s virt %s arch %s", amiID, img.RootDeviceType, aws.ToString(img.ImageLocation), img.State, img.VirtualizationType, img.Architecture)
	}
	tags := map[string]string{}
	for _, tg := range img.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags["Name"] != "instancestore-demo" || tags["SourceAMI"] != source {
		t.Errorf("AMI tags %v", tags)
	}
	if d := aws.ToString(img.Description); d != "Built by packer-plugin-instancestore from "+source {
		t.Errorf("AMI description %q", d)
	}

	// Launch the new AMI and find the provisioned file.
	got := a.sshNewInstance(t, amiID, "cat /etc/instancestore/demo.txt; echo --; find / -xdev -name 'instancestore-bundler*' 2>/dev/null; true")
	file, found, _ := strings.Cut(got, "--\n")
	if !strings.Contains(file, "provisioned by packer from "+source) {
		t.Errorf("the provisioned file is not in the new AMI: %q", got)
	}
	if strings.TrimSpace(found) != "" {
		t.Errorf("the agent's files were bundled into the image: %q", found)
	}

	// Nothing from the build is left but the AMI and its bundle.
	a.checkLeftovers(t, bucket, wantLoc)

	// Leave the environment empty for the other tests.
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(amiID)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
}

func (a *accEnv) emptyBucket(t *testing.T, bucket string) {
	t.Helper()
	ctx := context.Background()
	out, err := a.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		return
	}
	for _, o := range out.Contents {
		if _, err := a.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: o.Key}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAcceptanceLocalBuildX509: with x509_cert_path and x509_key_path the manifest is
// signed with the user's key and the bundle key is wrapped for the user's certificate
// as well, so the user can verify and unbundle the image later: checked here by
// verifying the signature and every part with the key unwrapped by the user's key.
func TestAcceptanceLocalBuildX509(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	outDir := t.TempDir()
	bucket := "acc-x509"
	certPath, _ := filepath.Abs("testdata/user-cert.pem")
	keyPath, _ := filepath.Abs("testdata/user-key.pem")
	samples := cmdlines.Sample()
	out, err, _ := a.build(t, outDir, bucket, "", "x509_cert_path="+certPath, "x509_key_path="+keyPath)
	seenCmdlines := samples.Stop()
	if err != nil {
		a.failWithLog(t, outDir, out, err)
	}
	if strings.Contains(out, "No X.509 certificate given") {
		t.Errorf("the build used a throw-away certificate although x509_cert_path was set")
	}
	gen, err := os.ReadFile(filepath.Join(outDir, "generated-data.txt"))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(gen))
	if len(fields) != 2 {
		t.Fatalf("generated-data.txt %q", gen)
	}
	bkt, prefix, name, err := parseImageLocation(strings.TrimPrefix(fields[1], "s3://"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := aws.Config{Region: a.vars["AWS_REGION"], Credentials: credentials.NewStaticCredentialsProvider(a.vars["AWS_ACCESS_KEY_ID"], a.vars["AWS_SECRET_ACCESS_KEY"], "")}
	cfg.BaseEndpoint = aws.String(a.vars["AWS_ENDPOINT_URL_S3"])
	b, err := s3bundle.New(cfg, cfg.Region, bkt, prefix, s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.GetManifest(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := bundle.LoadCertificate(certPath)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.LoadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.VerifySignature(cert.PublicKey.(*rsa.PublicKey)); err != nil {
		t.Errorf("the manifest is not signed with x509_key_path: %v", err)
	}
	key, err := bundle.UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	if err != nil {
		t.Fatalf("the user's key does not unwrap the bundle key: %v", err)
	}
	if _, err := bundle.Verify(ctx, m, key, b); err != nil {
		t.Errorf("verifying the bundle with the user's key: %v", err)
	}
	a.checkNoSecrets(t, outDir, out, seenCmdlines, map[string]string{
		"bundle key":            key.KeyHex(),
		"bundle IV":             key.IVHex(),
		"x509_key_path content": strings.Split(readFile(t, keyPath), "\n")[1],
	})
	if m.User != a.vars["INSTANCESTORE_ACCOUNT_ID"] {
		t.Errorf("manifest user %q, want the account %s", m.User, a.vars["INSTANCESTORE_ACCOUNT_ID"])
	}

	// Clean up through the artifact's own Destroy, as a post-processor would.
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("images: %v %d", err, len(imgs.Images))
	}
	t.Setenv("AWS_ENDPOINT_URL_EC2", a.vars["AWS_ENDPOINT_URL_EC2"])
	t.Setenv("AWS_ENDPOINT_URL_S3", a.vars["AWS_ENDPOINT_URL_S3"])
	loaded, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.Region), awsconfig.WithCredentialsProvider(cfg.Credentials))
	if err != nil {
		t.Fatal(err)
	}
	art := &Artifact{Amis: map[string]string{cfg.Region: aws.ToString(imgs.Images[0].ImageId)}, Config: &loaded,
		Bundle: &bundleLocation{Bucket: bkt, Prefix: prefix, Region: cfg.Region, PathStyle: true, Objects: append(partNames(m), name+".manifest.xml")}}
	if err := art.Destroy(); err != nil {
		t.Fatal(err)
	}
	a.checkLeftovers(t, bucket, "")
}

func partNames(m *bundle.Manifest) []string {
	var names []string
	for _, p := range m.Parts {
		names = append(names, p.Filename)
	}
	return names
}

// sshNewInstance launches ami, runs cmd over SSH as admin and terminates the instance.
func (a *accEnv) sshNewInstance(t *testing.T, ami, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := launch.Run(ctx, a.ec2, ami, "m3.medium", "admin", cmd, t.Logf)
	if err != nil {
		t.Fatalf("on an instance of the new AMI %s: %v: %s", ami, err, out)
	}
	return out
}

// checkLeftovers fails when the simulator or S3 holds anything a build made besides
// the AMI registered from keepManifest (bucket/key; "" when no AMI may remain):
// instances not terminated, key pairs, security groups, objects.
func (a *accEnv) checkLeftovers(t *testing.T, bucket, keepManifest string) {
	t.Helper()
	ctx := context.Background()
	var problems []string

	// Instances terminate asynchronously: wait for the last ones.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		d, err := a.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		if err != nil {
			t.Fatal(err)
		}
		var alive []string
		for _, r := range d.Reservations {
			for _, in := range r.Instances {
				if in.State.Name != ec2types.InstanceStateNameTerminated {
					alive = append(alive, aws.ToString(in.InstanceId)+" "+string(in.State.Name))
				}
			}
		}
		if len(alive) == 0 {
			break
		}
		if time.Now().After(deadline) {
			problems = append(problems, fmt.Sprintf("instances left: %v", alive))
			break
		}
		time.Sleep(time.Second)
	}
	kps, err := a.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kps.KeyPairs {
		problems = append(problems, "key pair left: "+aws.ToString(k.KeyName))
	}
	sgs, err := a.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range sgs.SecurityGroups {
		if aws.ToString(g.GroupName) != "default" {
			problems = append(problems, "security group left: "+aws.ToString(g.GroupName))
		}
	}
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs.Images {
		if keepManifest == "" || aws.ToString(img.ImageLocation) != keepManifest {
			problems = append(problems, fmt.Sprintf("AMI left: %s %s", aws.ToString(img.ImageId), aws.ToString(img.ImageLocation)))
		}
	}

	// S3: only the kept bundle's objects (the parts sit beside the manifest).
	var keys []string
	p := s3.NewListObjectsV2Paginator(a.s3, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			if strings.Contains(err.Error(), "NoSuchBucket") {
				break
			}
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	keepDir, keepName := "", ""
	if keepManifest != "" {
		key := strings.TrimPrefix(keepManifest, bucket+"/")
		keepDir, keepName = filepath.Dir(key)+"/", strings.TrimSuffix(filepath.Base(key), ".manifest.xml")
	}
	for _, k := range keys {
		if keepManifest == "" || !strings.HasPrefix(k, keepDir+keepName+".") {
			problems = append(problems, "object left: s3://"+bucket+"/"+k)
		}
	}
	if keepManifest != "" && len(keys) < 2 {
		problems = append(problems, fmt.Sprintf("the kept bundle has %d objects: %v", len(keys), keys))
	}
	if len(problems) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(problems, "\n  "))
	}
}

// TestAcceptanceCancel interrupts `packer build` (SIGINT, as Ctrl-C does) at the step
// boundaries of a build and checks that the cleanups leave nothing behind: no instance,
// key pair, security group, S3 object or AMI from that build.
func TestAcceptanceCancel(t *testing.T) {
	a := startLocal(t)
	// Lines packer prints as a step starts; SIGINT goes out when one appears.
	boundaries := []struct{ name, marker string }{
		{"key pair", "Creating temporary keypair"},
		{"launch", "Launching a source AWS instance"},
		{"provision", "Provisioning with shell script"},
		{"bundle", "Running the agent"},
		{"register", "Registering AMI"},
		{"wait for AMI", "Waiting for the AMI to become available"},
		{"tags", "Adding tags to AMI"},
	}
	for i, bd := range boundaries {
		t.Run(bd.name, func(t *testing.T) {
			outDir := t.TempDir()
			bucket := fmt.Sprintf("acc-cancel-%d", i)
			out, err, interrupted := a.build(t, outDir, bucket, bd.marker)
			if !interrupted {
				a.failWithLog(t, outDir, out, fmt.Errorf("the build never printed %q (exit: %v)", bd.marker, err))
			}
			if err == nil {
				t.Errorf("packer build succeeded although it was interrupted at %q:\n%s", bd.marker, out)
			}
			if _, statErr := os.Stat(filepath.Join(outDir, "packer-manifest.json")); statErr == nil {
				t.Errorf("post-processors ran after the interrupt")
			}
			a.checkLeftovers(t, bucket, "")
			if t.Failed() {
				t.Logf("packer output:\n%s", out)
			}
		})
	}
}

// TestAcceptanceLocalBuildHVM builds an hvm AMI (bundle_partition defaults to auto) from
// the hvm base AMI and boots it.
func TestAcceptanceLocalBuildHVM(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	outDir := t.TempDir()
	bucket := "acc-hvm"
	out, err, _ := a.build(t, outDir, bucket, "", "virtualization_type=hvm", "source_ami="+a.vars["INSTANCESTORE_SOURCE_AMI_HVM"])
	if err != nil {
		a.failWithLog(t, outDir, out, err)
	}
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("images: %v", err)
	}
	img := imgs.Images[0]
	if img.VirtualizationType != ec2types.VirtualizationTypeHvm || img.RootDeviceType != ec2types.DeviceTypeInstanceStore {
		t.Errorf("AMI %s: %s %s", aws.ToString(img.ImageId), img.VirtualizationType, img.RootDeviceType)
	}
	got := a.sshNewInstance(t, aws.ToString(img.ImageId), "cat /etc/instancestore/demo.txt")
	if !strings.Contains(got, "provisioned by packer from "+a.vars["INSTANCESTORE_SOURCE_AMI_HVM"]) {
		t.Errorf("the provisioned file is not in the new hvm AMI: %q", got)
	}
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: img.ImageId}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
	a.checkLeftovers(t, bucket, "")
}
