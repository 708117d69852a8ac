//go:build linux

package instancestore

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/instancestore/packer-plugin-instancestore/internal/packertest"
)

// TestAcceptanceReleaseBuild builds the plugin the way .goreleaser.yml does (`go
// generate ./agent/bin` embeds the linux/amd64 and linux/386 agents, then a static
// CGO_ENABLED=0 -trimpath build) and runs an acceptance build with it: the agent on
// the instance is the embedded one, not the plugin serving as its own agent.
func TestAcceptanceReleaseBuild(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	dir := t.TempDir()
	plugin := filepath.Join(dir, "build", "packer-plugin-instancestore")
	run := func(env []string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = a.Root
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	dist := filepath.Join(a.Root, "agent", "bin", "dist")
	removeDist := func() {
		for _, arch := range []string{"amd64", "386"} {
			os.Remove(filepath.Join(dist, "instancestore-bundler-linux-"+arch+".gz"))
		}
	}
	// The embedded agents are build outputs: gone again once the plugin is built, so
	// that other builds of this tree keep their own behaviour.
	t.Cleanup(removeDist)
	run(nil, "go", "generate", "./agent/bin")
	for _, arch := range []string{"amd64", "386"} {
		if st, err := os.Stat(filepath.Join(dist, "instancestore-bundler-linux-"+arch+".gz")); err != nil || st.Size() == 0 {
			t.Fatalf("go generate ./agent/bin wrote no linux/%s agent: %v", arch, err)
		}
	}
	run([]string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags", "-s -w "+packertest.ReleaseLdflags, "-o", plugin, ".")
	removeDist()
	f, err := elf.Open(plugin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the release-style plugin is dynamically linked")
		}
	}
	f.Close()

	rel := *a
	pp := *a.Packer
	pe := packerEnv{&pp}
	pe.Plugin = plugin
	pe.Env = []string{
		"PACKER_PLUGIN_PATH=" + filepath.Join(dir, "plugins"),
		"PACKER_CONFIG_DIR=" + filepath.Join(dir, "config"),
		"PACKER_CACHE_DIR=" + filepath.Join(dir, "cache"),
		"CHECKPOINT_DISABLE=1",
		"PACKER_NO_COLOR=1",
	}
	rel.packerEnv = &pe
	run(pe.Env, pe.Bin, "plugins", "install", "--path", plugin, "github.com/instancestore/instancestore")

	outDir := t.TempDir()
	bucket := "acc-release"
	out, err, _ := rel.build(t, outDir, bucket, "")
	if err != nil {
		rel.failWithLog(t, outDir, out, err)
	}
	if !strings.Contains(out, "Running the agent (embedded linux/amd64 agent)") {
		t.Errorf("the build did not run the embedded agent:\n%s", out)
	}
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("images: %v", err)
	}
	id := aws.ToString(imgs.Images[0].ImageId)
	if got := a.sshNewInstance(t, id, "cat /etc/instancestore/demo.txt"); !strings.Contains(got, "provisioned by packer") {
		t.Errorf("the provisioned file is not in the AMI built by the release plugin: %q", got)
	}
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
	a.checkLeftovers(t, bucket, "")
}
