//go:build linux

package instancestore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/instancestore/packer-plugin-instancestore/internal/launch"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
)

// TestAcceptanceVMBuilds runs `packer build` of testdata/vm on real machines: the local
// environment with Machines "vm", where every instance is a qemu guest that boots its
// AMI as EC2 does (SeaBIOS and the image's own GRUB for HVM, PV-GRUB's menu for
// paravirtual). For each Debian base AMI (paravirtual, HVM with an MBR disk, HVM with
// a GPT disk) the source instance boots, cloud-init gives it the temporary key pair's
// key from the metadata service, a shell provisioner writes a file, the agent images
// the live root, the AMI registers; then a new instance of the AMI boots with a key
// pair of its own, and over SSH as admin the test finds the file, the image's kernel
// running and the root on the device EC2 gives it (/dev/vda1 for HVM, /dev/vda for
// the bare filesystem of paravirtual). Both instances are m3.medium with ephemeral0
// mapped: its instance store volume is at /mnt, and the agent's scratch goes there.
//
// One environment serves the three builds, one after the other, so this test runs
// one VM at a time: a TCG guest keeps a core busy while it boots. It runs in
// parallel with TestAcceptanceVMBuildEBSSource (each has an environment of its own),
// and make test (scripts/test.sh) runs both in a go test process of their own beside
// the rest of the tests, which keep about one of the 2 cores busy. The boots
// are slow (about a minute on an idle machine; at load 25 the paravirtual build took
// 19 minutes: 5m20s to SSH, 12m47s to image and bundle 2 GiB with 542 MiB of data,
// and the new AMI's instance answered after 3 minutes): each build gets 30 minutes.
func TestAcceptanceVMBuilds(t *testing.T) {
	a := startVMEnv(t)
	v := a.vars
	builds := []struct {
		name, virt, sourceVar, root string
	}{
		{"paravirtual", "paravirtual", "INSTANCESTORE_SOURCE_AMI", "/dev/vda"},
		{"hvm-mbr", "hvm", "INSTANCESTORE_SOURCE_AMI_HVM", "/dev/vda1"},
		{"hvm-gpt", "hvm", "INSTANCESTORE_SOURCE_AMI_HVM_GPT", "/dev/vda1"},
	}
	if only := os.Getenv("INSTANCESTORE_VM_BUILDS"); only != "" {
		// For a quicker look at one layout: INSTANCESTORE_VM_BUILDS=hvm-gpt.
		var keep = builds[:0]
		for _, b := range builds {
			if strings.Contains(","+only+",", ","+b.name+",") {
				keep = append(keep, b)
			}
		}
		builds = keep
	}
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			source := v[b.sourceVar]
			if source == "" {
				t.Fatalf("the VM environment sets no %s", b.sourceVar)
			}
			a.vmBuild(t, "acc-vm-"+b.name, source, b.virt, b.root)
		})
	}
}

// startVMEnv starts a local environment of its own with Machines "vm" for the test,
// closed (and checked for qemu processes left) at its end.
//
// The test runs in parallel with the package's other VM tests: nothing of its
// environment (EC2, S3, instances, namespaces, address leases) is shared.
func startVMEnv(t *testing.T) *accEnv {
	testroot.Acceptance(t)
	testroot.Require(t)
	t.Parallel()
	p := setupPacker(t)
	dir := t.TempDir()
	start := time.Now()
	env, err := localenv.Start(context.Background(), localenv.Options{Dir: dir, S3: "minio", Machines: "vm", Logf: func(format string, args ...any) {
		if strings.HasPrefix(format, "localenv:") {
			t.Logf(format, args...)
		}
	}})
	if err != nil {
		t.Fatalf("starting the local environment with VM machines: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("closing the VM environment: %v", err)
		}
		checkNoQemuUnder(t, dir)
	})
	t.Logf("VM environment up in %s", time.Since(start).Round(time.Second))
	v := map[string]string{}
	for _, kv := range env.Vars() {
		v[kv.Name] = kv.Value
	}
	cfg := aws.Config{Region: v["AWS_REGION"], Credentials: credentials.NewStaticCredentialsProvider(v["AWS_ACCESS_KEY_ID"], v["AWS_SECRET_ACCESS_KEY"], "")}
	return &accEnv{
		packerEnv: p,
		local:     env,
		vars:      v,
		ec2:       ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(v["AWS_ENDPOINT_URL_EC2"]) }),
		s3: s3.NewFromConfig(cfg, func(o *s3.Options) {
			o.BaseEndpoint = aws.String(v["AWS_ENDPOINT_URL_S3"])
			o.UsePathStyle = true
		}),
	}
}

func (a *accEnv) vmBuild(t *testing.T, bucket, source, virt, wantRoot string) {
	ctx := context.Background()
	out, outDir := a.vmPackerBuild(t, "vm", 30*time.Minute, "-var", "s3_bucket="+bucket, "-var", "source_ami="+source, "-var", "virtualization_type="+virt)
	amiIDs := vmManifestAMIs(t, outDir)
	if len(amiIDs) != 1 {
		t.Fatalf("packer-manifest.json names AMIs %v, want one", amiIDs)
	}
	amiID := amiIDs[0]
	img := a.instanceStoreAMI(t, amiID, virt)
	location := aws.ToString(img.ImageLocation)
	if virt == "paravirtual" && aws.ToString(img.KernelId) != localenv.PVGrubKernelID {
		t.Errorf("paravirtual AMI %s has kernel %q, want the source's PV-GRUB %s", amiID, aws.ToString(img.KernelId), localenv.PVGrubKernelID)
	}

	// What the provisioner saw on the live source instance.
	srcKernel := provisionerSaid(t, out, "source kernel")
	if got := provisionerSaid(t, out, "source root"); got != wantRoot {
		t.Errorf("the source instance's root is on %q, want %s", got, wantRoot)
	}
	if got := provisionerSaid(t, out, "source mnt"); !strings.HasPrefix(got, "/dev/vdb ext3") {
		t.Errorf("the source instance's /mnt is %q, want its instance store volume ephemeral0 (/dev/vdb, ext3) mounted by cloud-init", got)
	}

	// The agent's default scratch is the instance store volume at /mnt.
	if !regexp.MustCompile(`agent: imaging / \(ext4, [^)]*\) into /mnt/instancestore-run-`).MatchString(out) {
		t.Errorf("the agent did not image / into a scratch directory under /mnt, the instance store volume (no \"agent: imaging / (...) into /mnt/instancestore-run-...\" line in packer's output)")
	}

	a.vmBootAMI(t, amiID, "m3.medium", source, srcKernel, wantRoot, "/dev/vdb ext3")

	a.checkLeftovers(t, bucket, location)
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(amiID)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
	a.checkLeftovers(t, bucket, "")
}

// vmPackerBuild runs packer init and `packer build` of testdata/<template> with
// output_dir and the given arguments (-var ...), for at most timeout, and returns
// packer's output and the output directory (packer.log, packer-manifest.json). A
// failed build fails the test.
func (a *accEnv) vmPackerBuild(t *testing.T, template string, timeout time.Duration, args ...string) (out, outDir string) {
	t.Helper()
	outDir = t.TempDir()
	dir := filepath.Join(a.Root, "builder", "instancestore", "testdata", template)
	if out, err := a.run(t, dir, a.envList(), "init", "."); err != nil {
		t.Fatalf("packer init: %v\n%s", err, out)
	}
	bctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	r := a.Build(bctx, t, dir, a.envList("PACKER_LOG=1", "PACKER_LOG_PATH="+filepath.Join(outDir, "packer.log")), "",
		append(append([]string{"-timestamp-ui", "-var", "output_dir=" + outDir}, args...), ".")...)
	out = r.Output
	if r.Err != nil {
		a.failWithLog(t, outDir, out, r.Err)
	}
	t.Logf("packer build of testdata/%s %v took %s:\n%s", template, args, time.Since(start).Round(time.Second), out)
	return out, outDir
}

// vmManifestAMIs is every AMI id in packer-manifest.json under outDir, in the order of
// its builds and of each artifact id's region:ami list.
func vmManifestAMIs(t *testing.T, outDir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Builds []struct {
			ArtifactID string `json:"artifact_id"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(data, &manifest); err != nil || len(manifest.Builds) == 0 {
		t.Fatalf("packer-manifest.json: %v\n%s", err, data)
	}
	var ids []string
	for _, b := range manifest.Builds {
		for _, ra := range strings.Split(b.ArtifactID, ",") {
			if _, id, ok := strings.Cut(ra, ":"); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// instanceStoreAMI is the AMI as EC2 describes it; the test fails unless it is
// instance store-backed with the virtualization type virt.
func (a *accEnv) instanceStoreAMI(t *testing.T, amiID, virt string) ec2types.Image {
	t.Helper()
	imgs, err := a.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{amiID}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("DescribeImages %s: %v", amiID, err)
	}
	img := imgs.Images[0]
	if img.RootDeviceType != ec2types.DeviceTypeInstanceStore || string(img.VirtualizationType) != virt {
		t.Errorf("AMI %s: root device type %s, virtualization %s; want instance-store, %s", amiID, img.RootDeviceType, img.VirtualizationType, virt)
	}
	return img
}

// vmBootAMI boots a new instance of the AMI on instanceType with its own key pair, and
// over SSH as admin finds the file the provisioner wrote on an instance of source, the
// image's own kernel srcKernel running from /boot, the root on wantRoot and /mnt:
// wantMnt is the start of findmnt's "SOURCE FSTYPE" there ("/dev/vdb ext3", the AMI's
// ephemeral0 on m3.medium), or "" where nothing may be mounted (t3: no instance store).
func (a *accEnv) vmBootAMI(t *testing.T, amiID, instanceType, source, srcKernel, wantRoot, wantMnt string) {
	t.Helper()
	lctx, lcancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer lcancel()
	lstart := time.Now()
	got, err := launch.Run(lctx, a.ec2, amiID, instanceType, "admin",
		"cat /etc/instancestore/demo.txt; echo \"kernel: $(uname -r)\"; echo \"root: $(findmnt -n -o SOURCE /)\"; "+
			"echo \"vmlinuz: $(ls /boot/vmlinuz-$(uname -r))\"; echo \"mnt: $(findmnt -n -o SOURCE,FSTYPE /mnt || true)\"", t.Logf)
	if err != nil {
		t.Fatalf("on an %s instance of the new AMI %s: %v: %s", instanceType, amiID, err, got)
	}
	t.Logf("the new AMI's %s instance answered over SSH after %s:\n%s", instanceType, time.Since(lstart).Round(time.Second), got)
	if !strings.Contains(got, "provisioned by packer from "+source) {
		t.Errorf("the provisioned file is not in the new AMI: %q", got)
	}
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `: (.*)$`).FindStringSubmatch(got)
		if m == nil {
			return ""
		}
		return strings.TrimSpace(m[1])
	}
	if k := field("kernel"); k == "" || k != srcKernel || field("vmlinuz") != "/boot/vmlinuz-"+k {
		t.Errorf("the new instance runs kernel %q (vmlinuz %q); want the image's own %q from /boot", k, field("vmlinuz"), srcKernel)
	}
	if r := field("root"); r != wantRoot {
		t.Errorf("the new instance's root is on %q, want %s", r, wantRoot)
	}
	if m := field("mnt"); wantMnt == "" && m != "" || !strings.HasPrefix(m, wantMnt) {
		t.Errorf("the new %s instance's /mnt is %q, want %q", instanceType, m, wantMnt)
	}
}

// provisionerSaid is what the shell provisioner printed after "name: " in packer's
// output (its lines look like "... instancestore.vm: name: value").
func provisionerSaid(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`instancestore\.vm: ` + name + `: (.*)`).FindStringSubmatch(out)
	if m == nil {
		t.Errorf("the provisioner's %q line is not in packer's output", name)
		return ""
	}
	return strings.TrimSpace(m[1])
}

// checkNoQemuUnder fails when a qemu process still runs with a file under dir on its
// command line (an instance directory of the environment).
func checkNoQemuUnder(t *testing.T, dir string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(filepath.Base(args[0]), "qemu") && strings.Contains(string(b), dir) {
			t.Errorf("qemu left running after the environment closed: %s", fmt.Sprint(strings.Join(args, " ")))
		}
	}
}
