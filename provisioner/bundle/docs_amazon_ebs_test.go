package bundle

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// TestDocsAmazonEBSTemplateValidates: the provisioner page's "With amazon-ebs" template
// and testdata/amazon-ebs pass `packer validate` with packer-plugin-amazon v1.8.2 and
// this plugin installed (the builder package's docs test leaves amazon-ebs templates
// to this one).
func TestDocsAmazonEBSTemplateValidates(t *testing.T) {
	testroot.Short(t, "builds packer-plugin-amazon and runs Packer")
	page, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "provisioners", "instancestore-bundle.mdx"))
	if err != nil {
		t.Fatal(err)
	}
	var src string
	for _, m := range regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(string(page), -1) {
		if strings.Contains(m[1], `source "amazon-ebs"`) {
			src = m[1]
		}
	}
	if src == "" {
		t.Fatal(`no template with source "amazon-ebs" on the provisioner page`)
	}
	dir := t.TempDir()
	packer, env := installPlugin(t, dir)
	installAmazonPlugin(t, packer, env)
	tpl := filepath.Join(dir, "amazon-ebs.pkr.hcl")
	if err := os.WriteFile(tpl, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	validate := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(packer, append(append([]string{"validate"}, args...), ".")...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "The configuration is valid.") {
			t.Fatalf("packer validate in %s: %v\n%s", dir, err, out)
		}
		cmd = exec.Command(packer, "fmt", "-check", ".")
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("packer fmt -check in %s: %v\n%s", dir, err, out)
		}
	}
	validate(dir)
	td, _ := filepath.Abs(filepath.Join("testdata", "amazon-ebs"))
	validate(td, "-var", "region=us-east-1", "-var", "source_ami=ami-12345678", "-var", "s3_bucket=my-bundles")
}
