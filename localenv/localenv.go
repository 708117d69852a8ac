//go:build linux

// Package localenv brings up the local EC2 + S3 environment in one process: an S3
// server (gofakes3 in-process, or MinIO) behind the recording front, the EC2 and STS
// simulator with instances in network namespaces, and base AMIs seeded from a lite
// root. `instancestore-localenv up/down` and the acceptance tests use it.
package localenv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

// File names inside the environment's directory.
const (
	EnvFileName = "env"          // shell-sourceable variables, written when ready
	PIDFileName = "localenv.pid" // the daemon's pid
	LogFileName = "localenv.log" // the daemon's log
	DefaultDir  = "/var/lib/instancestore-localenv"
)

// Base AMI names the environment seeds (owner alias "amazon", instance-store root).
const (
	LiteAMIName    = "instancestore-lite-x86_64"     // paravirtual: m1, m3, c1, c3 ...
	LiteHVMAMIName = "instancestore-lite-hvm-x86_64" // hvm: m3, c3, r3, i2 ...
)

// Options configure Start.
type Options struct {
	// Dir holds the state: env file, EC2 key and certificate, unbundled AMIs, instance
	// copies, the lite root and MinIO's data. Default DefaultDir.
	Dir string
	// Region is the simulator's region and the S3 default region (default us-east-1).
	Region string
	// S3 is "gofakes3" (default, in-process, no signature checks) or "minio" (checks
	// SigV4 and presigned URLs; built on first use, about 4 minutes).
	S3 string
	// Debian also seeds DebianAMIName, a Debian 12 minbase root with OpenSSH and sudo
	// (debootstrap, several minutes the first time, then cached).
	Debian bool
	// Machines is what instances are: "namespace" (default: sshd in a network
	// namespace on the AMI's root, fast, nothing boots) or "vm" (qemu guests that boot
	// the AMI as EC2 does, localenv/vm; the base AMIs are then real Debian images,
	// VMAMINames).
	Machines string
	// Logf receives progress and the simulator's request log.
	Logf func(format string, args ...any)
}

// Base AMIs of the "vm" machines: Debian 12 images that boot (SeedImage).
const (
	DebianHVMMBRAMIName = "instancestore-debian-12-hvm-mbr"
	DebianHVMGPTAMIName = "instancestore-debian-12-hvm-gpt"
	DebianPVAMIName     = "instancestore-debian-12-pv"
	// DebianEBSAMIName is EBS-backed, shaped like today's official cloud images
	// (SeedEBSCloud): boots on Nitro types from NVMe.
	DebianEBSAMIName = "instancestore-debian-12-ebs"
)

// VMLaunchTimeout is how long a VM instance may take from RunInstances to sshd's
// banner before it fails to launch: a Debian guest with cloud-init under TCG on a
// loaded 2-core host was seen to take 3-4 minutes.
const VMLaunchTimeout = 10 * time.Minute

// PVGrubKernelID is the kernel id of the paravirtual base AMI: EC2's PV-GRUB for
// partition-less x86_64 images (pv-grub-hd0, us-east-1), which boots the kernel the
// image's /boot/grub/menu.lst names.
const PVGrubKernelID = "aki-919dcaf8"

// vmSeeds are the base AMIs of the "vm" machines.
var vmSeeds = []struct {
	name, description, virt string
	kind                    SeedKind
}{
	{DebianHVMMBRAMIName, "Debian 12 (hvm, MBR disk, GRUB 2, cloud-init)", "hvm", SeedHVMMBR},
	{DebianHVMGPTAMIName, "Debian 12 (hvm, GPT disk with a BIOS boot partition, GRUB 2, cloud-init)", "hvm", SeedHVMGPT},
	{DebianPVAMIName, "Debian 12 (paravirtual, bare ext4, PV-GRUB menu.lst, cloud-init)", "paravirtual", SeedPV},
	{DebianEBSAMIName, "Debian 12 (EBS-backed, hvm, GPT with BIOS boot and EFI system partitions, NVMe, cloud-init)", "hvm", SeedEBSCloud},
}

// Env is a running environment.
type Env struct {
	Dir         string
	Region      string
	Credentials ec2sim.Credentials
	EC2         *ec2sim.Server
	S3Backend   *s3env.Backend
	S3Front     *s3env.Front
	// BaseAMIs maps the seeded AMI names to their ids.
	BaseAMIs map[string]string
	// Machines is Options.Machines.
	Machines string
}

// Var is one environment variable of Env.Vars.
type Var struct{ Name, Value string }

// RequireRoot explains, when not root, why the environment needs it.
func RequireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("the local environment needs root: its instances are network namespaces with sshd, and registered AMIs are loop-mounted images. Run it with sudo (e.g. `sudo instancestore-localenv up`)")
	}
	return nil
}

// Start brings everything up. Close takes it down and leaves nothing behind.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.S3 == "" {
		opts.S3 = "gofakes3"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	switch opts.Machines {
	case "":
		opts.Machines = "namespace"
	case "namespace", "vm":
	default:
		return nil, fmt.Errorf("--machines %q: want namespace or vm", opts.Machines)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the environment directory %s: %w", dir, err)
	}
	e := &Env{Dir: dir, Region: opts.Region, Machines: opts.Machines, BaseAMIs: map[string]string{}}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	e.Credentials = ec2sim.Credentials{AccessKeyID: "AKIA" + randomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
		SecretAccessKey: randomString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

	switch opts.S3 {
	case "gofakes3":
		e.S3Backend, err = s3env.StartGoFakeS3()
	case "minio":
		opts.Logf("localenv: starting MinIO (built on first use, about 4 minutes)")
		e.S3Backend, err = s3env.StartMinIO(ctx, filepath.Join(dir, "minio"), s3env.Credentials{AccessKeyID: e.Credentials.AccessKeyID, SecretAccessKey: e.Credentials.SecretAccessKey})
	default:
		return nil, fmt.Errorf("--s3 %q: want gofakes3 or minio", opts.S3)
	}
	if err != nil {
		return nil, fmt.Errorf("starting S3 (%s): %w", opts.S3, err)
	}
	if e.S3Backend.Region != opts.Region {
		// The backend's default region is where buckets made without a location
		// constraint live; keep it the environment's region.
		e.S3Backend.Region = opts.Region
	}
	if e.S3Front, err = s3env.NewFront(e.S3Backend, s3env.FrontOptions{}); err != nil {
		return nil, err
	}

	forward := []string{strings.TrimPrefix(e.S3Front.URL(), "http://")}
	var launcher ec2sim.Launcher = &ec2sim.NamespaceLauncher{WorkDir: filepath.Join(dir, "instances"), Forward: forward}
	var launchTimeout time.Duration
	if opts.Machines == "vm" {
		kernel, err := DebianVMKernel(ctx, opts.Logf)
		if err != nil {
			return nil, fmt.Errorf("the kernel for the KVM probe: %w", err)
		}
		launcher = &vm.VMLauncher{WorkDir: filepath.Join(dir, "instances"), Forward: forward, Logf: opts.Logf, ProbeKernel: kernel}
		launchTimeout = VMLaunchTimeout
	}
	e.EC2, err = ec2sim.Start(ec2sim.Config{
		Region:        opts.Region,
		Credentials:   e.Credentials,
		DataDir:       filepath.Join(dir, "ec2"),
		S3:            ec2sim.FrontReader{Front: e.S3Front},
		Launcher:      launcher,
		LaunchTimeout: launchTimeout,
		Logf:          opts.Logf,
	})
	if err != nil {
		return nil, err
	}
	if opts.Machines == "vm" {
		for _, s := range vmSeeds {
			img, err := SeedImage(ctx, s.kind, opts.Logf)
			if err != nil {
				return nil, fmt.Errorf("building the base AMI %s: %w", s.name, err)
			}
			si := ec2sim.SeedImage{Name: s.name, Description: s.description, VirtualizationType: s.virt, Root: ec2sim.RootSource{Image: img},
				EBS: s.kind == SeedEBSCloud}
			if s.virt == "paravirtual" {
				si.KernelID = PVGrubKernelID
			}
			id, err := e.EC2.Seed(si)
			if err != nil {
				return nil, err
			}
			e.BaseAMIs[s.name] = id
		}
		return e, nil
	}
	opts.Logf("localenv: building the lite instance root")
	lite := filepath.Join(dir, "roots", "lite")
	if err := os.RemoveAll(lite); err != nil {
		return nil, err
	}
	if err := instance.BuildLiteRoot(ctx, lite); err != nil {
		return nil, fmt.Errorf("building the lite root: %w", err)
	}
	if err := addHostTools(lite, ImagingTools); err != nil {
		return nil, err
	}
	// The base AMIs boot from an ext4 image of the lite root, as EC2 instances boot
	// from a filesystem: inside the instance "/" is a real mount (type, label, UUID)
	// that bundle-vol can image. Instances run on sparse copies of it.
	liteImg := filepath.Join(dir, "roots", "lite.img")
	if err := MakeRootImage(ctx, lite, liteImg, RootImageSize); err != nil {
		return nil, err
	}
	for _, s := range []ec2sim.SeedImage{
		{Name: LiteAMIName, Description: "busybox + OpenSSH lite root (paravirtual)", VirtualizationType: "paravirtual", Root: ec2sim.RootSource{Image: liteImg}},
		{Name: LiteHVMAMIName, Description: "busybox + OpenSSH lite root (hvm)", VirtualizationType: "hvm", Root: ec2sim.RootSource{Image: liteImg}},
	} {
		id, err := e.EC2.Seed(s)
		if err != nil {
			return nil, err
		}
		e.BaseAMIs[s.Name] = id
	}
	if opts.Debian {
		tree := filepath.Join(dir, "roots", "debian")
		if err := os.RemoveAll(tree); err != nil {
			return nil, err
		}
		if err := BuildDebianRoot(ctx, tree, opts.Logf); err != nil {
			return nil, err
		}
		img := filepath.Join(dir, "roots", "debian.img")
		if err := MakeRootImage(ctx, tree, img, RootImageSize); err != nil {
			return nil, err
		}
		os.RemoveAll(tree) // the image has it all
		id, err := e.EC2.Seed(ec2sim.SeedImage{Name: DebianAMIName, Description: "Debian 12 minbase with OpenSSH and sudo (hvm)",
			VirtualizationType: "hvm", Root: ec2sim.RootSource{Image: img}})
		if err != nil {
			return nil, err
		}
		e.BaseAMIs[DebianAMIName] = id
	}
	return e, nil
}

// RootImageSize is the apparent size of the base AMIs' root filesystem: room for
// provisioning and for bundle-vol's scratch image (the file is sparse, so it costs only
// what is written).
const RootImageSize = 2 << 30

// MakeRootImage writes an ext4 filesystem image of size bytes filled from tree
// (mke2fs -d, no mount needed), labelled cloudimg-rootfs like cloud images.
func MakeRootImage(ctx context.Context, tree, img string, size int64) error {
	os.Remove(img)
	out, err := exec.CommandContext(ctx, "mke2fs", "-q", "-F", "-t", "ext4", "-L", "cloudimg-rootfs", "-d", tree, img, fmt.Sprintf("%dk", size>>10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("making the root image %s from %s (mke2fs, Debian package e2fsprogs): %v: %s", img, tree, err, out)
	}
	return nil
}

// Vars are what a shell (or a test process) needs to use the environment.
func (e *Env) Vars() []Var {
	vars := []Var{
		{"AWS_ENDPOINT_URL_EC2", e.EC2.URL()},
		{"AWS_ENDPOINT_URL_STS", e.EC2.URL()},
		{"AWS_ENDPOINT_URL_S3", e.S3Front.URL()},
		{"AWS_ACCESS_KEY_ID", e.Credentials.AccessKeyID},
		{"AWS_SECRET_ACCESS_KEY", e.Credentials.SecretAccessKey},
		{"AWS_REGION", e.Region},
		{"AWS_DEFAULT_REGION", e.Region},
		{"AWS_EC2_METADATA_DISABLED", "true"},
		{"INSTANCESTORE_ACCOUNT_ID", e.EC2.AccountID()},
		{"INSTANCESTORE_EC2_CERT", e.EC2.EC2CertPath()},
		{"INSTANCESTORE_LOCALENV_DIR", e.Dir},
		{"INSTANCESTORE_MACHINES", e.Machines},
	}
	if e.Machines == "vm" {
		vars = append(vars, Var{"INSTANCESTORE_SOURCE_AMI", e.BaseAMIs[DebianPVAMIName]},
			Var{"INSTANCESTORE_SOURCE_AMI_HVM", e.BaseAMIs[DebianHVMMBRAMIName]},
			Var{"INSTANCESTORE_SOURCE_AMI_HVM_GPT", e.BaseAMIs[DebianHVMGPTAMIName]},
			Var{"INSTANCESTORE_SOURCE_AMI_EBS", e.BaseAMIs[DebianEBSAMIName]})
	} else {
		vars = append(vars, Var{"INSTANCESTORE_SOURCE_AMI", e.BaseAMIs[LiteAMIName]},
			Var{"INSTANCESTORE_SOURCE_AMI_HVM", e.BaseAMIs[LiteHVMAMIName]})
	}
	if id := e.BaseAMIs[DebianAMIName]; id != "" {
		vars = append(vars, Var{"INSTANCESTORE_DEBIAN_AMI", id})
	}
	return vars
}

// Close terminates every instance (sshd, namespaces, mounts, loop devices) and stops
// the servers.
func (e *Env) Close() error {
	var errs []error
	if e.EC2 != nil {
		errs = append(errs, e.EC2.Close())
	}
	if e.S3Front != nil {
		errs = append(errs, e.S3Front.Close())
	}
	if e.S3Backend != nil {
		errs = append(errs, e.S3Backend.Close())
	}
	// The simulator's state lives in memory: its AMI images and base roots mean
	// nothing to the next run, nor do MinIO's objects without the ACLs the front
	// recorded. The EC2 key and certificate stay, so that a template's ec2_cert_path
	// keeps working across up/down.
	for _, d := range []string{"instances", "roots", filepath.Join("ec2", "images"), "minio"} {
		errs = append(errs, os.RemoveAll(filepath.Join(e.Dir, d)))
	}
	return errors.Join(errs...)
}

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[k.Int64()]
	}
	return string(b)
}
