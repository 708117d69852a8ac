package instancestore

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/packertest"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// The tests in this file drive the real Packer binary (v1.11.2, pinned in tools/packer
// and built by scripts/build-tools.sh) with the plugin installed the way users install
// a local build: `packer plugins install --path`.

// packerEnv is the Packer the tests drive with this repository's plugin installed
// (internal/packertest: the pinned Packer in bin/, or the one INSTANCESTORE_TEST_PACKER
// names, which make packer-compat sets).
type packerEnv struct{ *packertest.Packer }

// setupPacker builds packer (once; cached in bin/ across runs) and the plugin, and
// installs the plugin into a private plugin directory. Every packer this test binary
// runs uses that directory and config dir only.
func setupPacker(t testing.TB) *packerEnv {
	t.Helper()
	testroot.Short(t, "builds the pinned Packer binary")
	return &packerEnv{packertest.Setup(t)}
}

// run runs the packer binary in dir (packertest's Run, bounded to 20 minutes) and
// returns its combined output and error.
func (e *packerEnv) run(t testing.TB, dir string, extraEnv []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	return e.Run(ctx, dir, extraEnv, args...)
}

func TestPluginDescribe(t *testing.T) {
	e := setupPacker(t)
	out, err := exec.Command(e.Plugin, "describe").Output()
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Version      string   `json:"version"`
		APIVersion   string   `json:"api_version"`
		Builders     []string `json:"builders"`
		Provisioners []string `json:"provisioners"`
	}
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("describe: %v\n%s", err, out)
	}
	if d.Version != "0.1.0" || d.APIVersion != "x5.0" {
		t.Errorf("describe: version %q api %q", d.Version, d.APIVersion)
	}
	if !slices.Equal(d.Builders, []string{"-packer-default-plugin-name-"}) {
		t.Errorf("builders = %q, want the builder as the default component", d.Builders)
	}
	if !slices.Contains(d.Provisioners, "bundle") {
		t.Errorf("provisioners = %q, want bundle", d.Provisioners)
	}
	// Packer sees the installed plugin.
	list, err := e.run(t, e.Root, nil, "plugins", "installed")
	if err != nil || !strings.Contains(list, "packer-plugin-instancestore_v0.1.0_x5.0_") {
		t.Errorf("packer plugins installed: %v\n%s", err, list)
	}
}

// exampleVars are the values the examples take from the environment or variables.
var exampleVars = map[string][]string{
	"local":              {"-var", "region=us-east-1", "-var", "source_ami=ami-12345678", "-var", "s3_bucket=demo-bundles"},
	"aws":                {"-var", "s3_bucket=my-bundles"},
	"aws-instance-store": {"-var", "s3_bucket=my-bundles"},
	"import":             {"-var", "region=us-east-1", "-var", "image=make-image.sh"},
	// Prepare only checks that the key file exists: any file of the example stands in.
	"ebs": {"-var", "region=us-east-1", "-var", "source_ami=ami-12345678", "-var", "x509_key_path=ebs.pkr.hcl"},
}

func TestExamplesValidate(t *testing.T) {
	e := setupPacker(t)
	dirs, err := filepath.Glob(filepath.Join(e.Root, "example", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			if out, err := e.run(t, dir, nil, "init", "."); err != nil {
				t.Fatalf("packer init: %v\n%s", err, out)
			}
			vars, ok := exampleVars[name]
			if !ok {
				t.Fatalf("example %s: add the variables it needs to exampleVars", name)
			}
			args := append(append([]string{"validate"}, vars...), ".")
			if out, err := e.run(t, dir, nil, args...); err != nil || !strings.Contains(out, "The configuration is valid.") {
				t.Fatalf("packer validate: %v\n%s", err, out)
			}
			if out, err := e.run(t, dir, nil, "fmt", "-check", "."); err != nil {
				t.Errorf("packer fmt -check: %v\n%s", err, out)
			}
		})
	}
}

// reHCLBlock finds the fenced HCL blocks of a docs page.
var reHCLBlock = regexp.MustCompile("(?s)```hcl\n(.*?)```")

// TestDocsTemplatesValidate validates every complete template (one with a build block)
// shown in the docs pages.
func TestDocsTemplatesValidate(t *testing.T) {
	e := setupPacker(t)
	// Every page the integrations portal shows: the README and each component's page.
	pages, err := filepath.Glob(filepath.Join(e.Root, "docs", "*", "*.mdx"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, filepath.Join(e.Root, "docs", "README.md"))
	for i, p := range pages {
		pages[i], _ = filepath.Rel(e.Root, p)
	}
	total := 0
	for _, page := range pages {
		data, err := os.ReadFile(filepath.Join(e.Root, page))
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range reHCLBlock.FindAllSubmatch(data, -1) {
			src := string(m[1])
			if !strings.Contains(src, "build {") {
				continue
			}
			if strings.Contains(src, `source "amazon-ebs"`) {
				// Needs packer-plugin-amazon: provisioner/bundle's
				// TestDocsAmazonEBSTemplateValidates validates it with that plugin.
				continue
			}
			total++
			t.Run(filepath.Base(page)+"#"+string(rune('0'+i)), func(t *testing.T) {
				dir := t.TempDir()
				if err := os.WriteFile(filepath.Join(dir, "template.pkr.hcl"), []byte(src), 0o644); err != nil {
					t.Fatal(err)
				}
				if strings.Contains(src, `"pk.pem"`) {
					// The user's private key; Prepare checks only that the file exists.
					if err := os.WriteFile(filepath.Join(dir, "pk.pem"), nil, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				args := []string{"validate"}
				if strings.Contains(src, `variable "s3_bucket"`) {
					args = append(args, "-var", "s3_bucket=my-bundles")
				}
				out, err := e.run(t, dir, []string{"AWS_REGION=us-east-1"}, append(args, ".")...)
				if err != nil || !strings.Contains(out, "The configuration is valid.") {
					t.Fatalf("docs template in %s is not valid: %v\n%s\n--- template ---\n%s", page, err, out, src)
				}
			})
		}
	}
	if total < 3 {
		t.Errorf("only %d complete templates in the docs; each page shows at least one", total)
	}
}

// TestBadTemplates: `packer validate` of each template in testdata/bad fails with the
// message its first line announces ("# error: ...").
func TestBadTemplates(t *testing.T) {
	e := setupPacker(t)
	files, err := filepath.Glob("testdata/bad/*.pkr.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad templates: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".pkr.hcl"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# error: ")
			if !ok {
				t.Fatalf("%s: first line must be `# error: <expected message>`", f)
			}
			abs, _ := filepath.Abs(f)
			out, err := e.run(t, filepath.Dir(abs), nil, "validate", filepath.Base(f))
			if err == nil {
				t.Fatalf("packer validate accepted %s:\n%s", f, out)
			}
			if !strings.Contains(out, want) {
				t.Errorf("packer validate %s: want %q in\n%s", f, want, out)
			}
		})
	}
}
