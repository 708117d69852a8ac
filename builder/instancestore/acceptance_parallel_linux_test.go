package instancestore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

type parallelResult struct {
	out       string
	err       error
	manifests map[string]string // source name -> bundle manifest location (bucket/key)
	amis      map[string]string // source name -> AMI id
}

// buildParallel runs `packer build` of testdata/parallel with the given run name.
func (a *accEnv) buildParallel(t *testing.T, run, bucket string, failC bool) parallelResult {
	dir := filepath.Join(a.Root, "builder", "instancestore", "testdata", "parallel")
	outDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	b := a.Build(ctx, t, dir, a.envList("PACKER_LOG=1", "PACKER_LOG_PATH="+filepath.Join(outDir, "packer.log")), "",
		"-var", "run="+run, "-var", "s3_bucket="+bucket, "-var", "output_dir="+outDir, "-var", fmt.Sprintf("fail_c=%v", failC), ".")
	r := parallelResult{out: b.Output, err: b.Err, manifests: map[string]string{}, amis: map[string]string{}}
	data, rerr := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if rerr == nil {
		var m struct {
			Builds []struct {
				ArtifactID string            `json:"artifact_id"`
				CustomData map[string]string `json:"custom_data"`
			} `json:"builds"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("packer-manifest.json of %s: %v", run, err)
		}
		for _, b := range m.Builds {
			_, ami, _ := strings.Cut(b.ArtifactID, ":")
			r.amis[b.CustomData["source"]] = ami
			r.manifests[b.CustomData["source"]] = strings.TrimPrefix(b.CustomData["bundle_manifest"], "s3://")
		}
	}
	return r
}

// TestAcceptanceParallelBuilds starts two `packer build` processes together, each
// with three sources built in parallel, against one bucket and the local EC2. In the
// second process source c fails in a provisioner (SIGINT would stop every source of a
// packer process): the five others register, each bundle under its own prefix, and
// the failed build's cleanup leaves nothing of its own behind and removes nothing of
// the others'.
func TestAcceptanceParallelBuilds(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	bucket := "acc-parallel"
	if out, err := a.run(t, filepath.Join(a.Root, "builder", "instancestore", "testdata", "parallel"), a.envList(), "init", "."); err != nil {
		t.Fatalf("packer init: %v\n%s", err, out)
	}
	var wg sync.WaitGroup
	res := make([]parallelResult, 2)
	for i, run := range []string{"p1", "p2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = a.buildParallel(t, run, bucket, run == "p2")
		}()
	}
	wg.Wait()
	if res[0].err != nil {
		t.Fatalf("packer build p1: %v\n%s", res[0].err, res[0].out)
	}
	if res[1].err == nil || !strings.Contains(res[1].out, "source c fails on purpose") {
		t.Fatalf("packer build p2 should fail in source c: %v\n%s", res[1].err, res[1].out)
	}
	want := map[string][]string{"p1": {"a", "b", "c"}, "p2": {"a", "b"}}
	prefixes := map[string]string{}
	var amis []string
	for i, run := range []string{"p1", "p2"} {
		if len(res[i].amis) != len(want[run]) {
			t.Fatalf("%s built %v, want %v\n%s", run, res[i].amis, want[run], res[i].out)
		}
		for _, src := range want[run] {
			ami, loc := res[i].amis[src], res[i].manifests[src]
			if !strings.HasPrefix(ami, "ami-") || !strings.HasPrefix(loc, bucket+"/") {
				t.Fatalf("%s.%s: AMI %q manifest %q", run, src, ami, loc)
			}
			dir := filepath.Dir(loc)
			if other, dup := prefixes[dir]; dup {
				t.Fatalf("%s.%s shares the prefix %s with %s", run, src, dir, other)
			}
			prefixes[dir] = run + "." + src
			amis = append(amis, ami)
			img, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
			if err != nil || len(img.Images) != 1 || aws.ToString(img.Images[0].ImageLocation) != loc || aws.ToString(img.Images[0].Name) != "par-"+run+"-"+src {
				t.Fatalf("%s.%s: DescribeImages %s: %v %+v", run, src, ami, err, img)
			}
		}
	}
	t.Logf("5 AMIs registered under %d prefixes; p2.c failed and cleaned up", len(prefixes))
	// What is left is exactly the five AMIs and their bundles, all complete.
	a.checkLeftoversMany(t, bucket, res)
	for _, ami := range amis {
		if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(ami)}); err != nil {
			t.Fatal(err)
		}
	}
	a.emptyBucket(t, bucket)
	// Instances, key pairs and security groups: none may be left.
	a.checkLeftovers(t, bucket, "")
}

// checkLeftoversMany is checkLeftovers with several kept bundles: every object of the
// bucket belongs to one of them, and each kept bundle still has its manifest.
func (a *accEnv) checkLeftoversMany(t *testing.T, bucket string, res []parallelResult) {
	t.Helper()
	ctx := context.Background()
	keep := map[string]bool{}
	for _, r := range res {
		for _, loc := range r.manifests {
			keep[loc] = true
		}
	}
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs.Images {
		if !keep[aws.ToString(img.ImageLocation)] {
			t.Errorf("AMI left: %s %s", aws.ToString(img.ImageId), aws.ToString(img.ImageLocation))
		}
	}
	objs, err := a.local.S3Front.Objects(ctx, bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		ok := false
		for loc := range keep {
			key := strings.TrimPrefix(loc, bucket+"/")
			if strings.HasPrefix(o, strings.TrimSuffix(key, ".manifest.xml")+".") {
				ok = true
				if o == key {
					seen[loc] = true
				}
			}
		}
		if !ok {
			t.Errorf("object left: s3://%s/%s", bucket, o)
		}
	}
	for loc := range keep {
		if !seen[loc] {
			t.Errorf("the manifest %s of a finished build is gone", loc)
		}
	}
}
