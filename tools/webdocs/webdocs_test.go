package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRepositoryWebDocs checks the links of the checked-in .web-docs (scripts/
// check-generated.sh checks the regenerated ones the same way).
func TestRepositoryWebDocs(t *testing.T) {
	problems, err := Check("../../.web-docs", "../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

const metadata = `integration {
  identifier = "packer/instancestore/instancestore"
  component {
    type = "builder"
    name = "B"
    slug = "instancestore"
  }
  component {
    type = "provisioner"
    name = "P"
    slug = "gone"
  }
}
`

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFindsBrokenLinks(t *testing.T) {
	dir := t.TempDir()
	repo := t.TempDir()
	write(t, filepath.Join(repo, "example", "a.pkr.hcl"), "")
	write(t, filepath.Join(dir, "metadata.hcl"), metadata)
	write(t, filepath.Join(dir, "README.md"), strings.Join([]string{
		"## Getting Started",
		"[ok](#getting-started) [ok](/packer/integrations/instancestore/instancestore/latest/components/builder/instancestore#s3_bucket)",
		"[ok](https://github.com/instancestore/packer-plugin-instancestore/tree/main/example)",
		"[ok](https://github.com/instancestore/packer-plugin-instancestore/blob/main/example/a.pkr.hcl)",
		"[ok](/packer/docs/templates/hcl_templates) [ok](https://example.com/x#y)",
		"[bad1](../../example)",
		"[bad2](#getting-started-now)",
		"[bad3](/packer/plugins/builders/amazon/ebs)",
		"[bad4](/packer/integrations/instancestore/instancestore/latest/components/post-processor/nope)",
		"[bad5](/packer/integrations/instancestore/instancestore/latest/components/builder/instancestore#no_such_option)",
		"[bad6](https://github.com/instancestore/packer-plugin-instancestore/blob/main/example/missing.hcl)",
		"```hcl",
		"[not a link](../in/code)",
		"```",
		"`[not a link](inline)`",
	}, "\n"))
	write(t, filepath.Join(dir, "components", "builder", "instancestore", "README.md"),
		"### Options\n\n- `s3_bucket` (string) - The bucket.\n\n[bad7](#options-1)\n")
	write(t, filepath.Join(dir, "components", "data-source", "extra", "README.md"), "text\n")

	problems, err := Check(dir, repo)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(problems, "\n")
	for _, want := range []string{
		"../../example: relative link",
		"#getting-started-now: no heading or option",
		"/packer/plugins/builders/amazon/ebs: old plugin page",
		"components/post-processor/nope: no such page",
		"#no_such_option: no heading or option with this anchor on",
		"example/missing.hcl: no such file",
		"#options-1: no heading",
		"no component block for the page components/data-source/extra",
		"component provisioner/gone has no page",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no problem %q reported; got:\n%s", want, all)
		}
	}
	if len(problems) != 9 {
		t.Errorf("%d problems, want 9:\n%s", len(problems), all)
	}
}

func TestAnchors(t *testing.T) {
	a := Anchors("# `instancestore` Builder\n## Build Template Data\n## IAM Permissions\n## IAM Permissions\n" +
		"#### Required:\n- `ami_name` (string) - x\n  - `nested` (bool)\n<a id=\"custom\"></a>\n```\n## not a heading\n```\n")
	for _, want := range []string{"instancestore-builder", "build-template-data", "iam-permissions", "iam-permissions-1", "required", "ami_name", "nested", "custom"} {
		if !a[want] {
			t.Errorf("no anchor %q in %v", want, a)
		}
	}
	if a["not-a-heading"] {
		t.Error("a heading inside a code block made an anchor")
	}
}

func TestRewriteLinks(t *testing.T) {
	for in, want := range map[string]string{
		"[x](/packer/plugins/builders/amazon#specifying-amazon-credentials)":     "[x](/packer/integrations/hashicorp/amazon#specifying-amazon-credentials)",
		"[x](/packer/plugins/builders/amazon/ebs)":                               "[x](/packer/integrations/hashicorp/amazon/latest/components/builder/ebs)",
		"[x](/packer/plugins/provisioners/windows-shell)":                        "[x](/packer/docs/provisioners/windows-shell)",
		"[x](/packer/plugins/provisioners/instancestore/instancestore-bundle#a)": "[x](/packer/integrations/instancestore/instancestore/latest/components/provisioner/instancestore-bundle#a)",
		"[x](/packer/docs/templates)":                                            "[x](/packer/docs/templates)",
	} {
		if got := string(RewriteLinks([]byte(in), "instancestore")); got != want {
			t.Errorf("RewriteLinks(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestCompile(t *testing.T) {
	src := t.TempDir()
	dst := t.TempDir()
	write(t, filepath.Join(src, "README.md"), "# Plugin\n\n[b](#x)\n")
	write(t, filepath.Join(src, "builders", "instancestore.mdx"), "---\npage_title: x\ndescription: >\n  y\n---\n\n# `instancestore` Builder\n\nType: `instancestore`\n")
	write(t, filepath.Join(dst, "metadata.hcl"), metadata)
	write(t, filepath.Join(dst, "components", "builder", "old", "README.md"), "stale")
	if err := Compile(src, dst, "instancestore"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dst, "components", "builder", "instancestore", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "Type: `instancestore`\n" {
		t.Errorf("component page = %q, want the page without front matter and title", got)
	}
	if _, err := os.Stat(filepath.Join(dst, "components", "builder", "old")); !os.IsNotExist(err) {
		t.Error("a stale component page was kept")
	}
	if _, err := os.Stat(filepath.Join(dst, "metadata.hcl")); err != nil {
		t.Error("metadata.hcl was removed")
	}

	// The folder the portal has no place for, as docs/guides/ was.
	write(t, filepath.Join(src, "guides", "migrating.mdx"), "# x\n")
	err = Compile(src, dst, "instancestore")
	if err == nil || !strings.Contains(err.Error(), `unexpected folder or file "guides"`) {
		t.Errorf("Compile with docs/guides: %v, want an unexpected folder error", err)
	}
}
