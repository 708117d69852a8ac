// Command vmcpu compares qemu's TCG CPU models for the local environment's VMs: for
// each model it boots the hvm-gpt seed image (m3.medium, vm.VMLauncher, one VM at a
// time), and prints the time to sshd's banner and to the first SSH login (cloud-init
// has installed the key from the metadata service by then), then uploads
// instancestore-bundler (built by bench/vm-cpu.sh) and times, in the guest, an ext4
// image of the guest's /usr/share made with mke2fs -d and bundle-image of it (gzip,
// AES-128-CBC, SHA-1 and MD5 in Go, as the agent bundles the root). It prints
// figures and asserts nothing. Root only (network namespaces, qemu).
//
//	sudo bench/vm-cpu.sh                  # CPUS="qemu64 max" by default
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

var diag = flag.Bool("diag", false, "also print systemd-analyze and cloud-init analyze of each boot (stderr)")

func main() {
	cpus := flag.String("cpus", "qemu64 max", "TCG CPU models to compare, separated by spaces")
	bundler := flag.String("bundler", "bin/instancestore-bundler-static", "a static instancestore-bundler to upload into the guest")
	kind := flag.String("seed", string(localenv.SeedHVMGPT), "seed image kind")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	img, err := localenv.SeedImage(ctx, localenv.SeedKind(*kind), logf)
	if err != nil {
		fail(err)
	}
	bin, err := os.ReadFile(*bundler)
	if err != nil {
		fail(err)
	}
	fmt.Printf("%-10s %8s %8s %8s %10s %10s %s\n", "cpu", "banner", "login", "guest up", "mke2fs s", "bundle s", "bundle-image real/user/sys, data")
	for i, cpu := range strings.Fields(*cpus) {
		if err := one(ctx, i, cpu, img, bin, logf); err != nil {
			fmt.Printf("%-10s failed: %v\n", cpu, err)
		}
	}
}

func one(ctx context.Context, i int, cpu, img string, bin []byte, logf func(string, ...any)) error {
	os.Setenv(vm.TCGCPUEnv, cpu)
	work, err := os.MkdirTemp("", "instancestore-vmcpu-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	l := &vm.VMLauncher{WorkDir: filepath.Join(work, "instances"), Accel: "tcg", Logf: logf}
	start := time.Now()
	inst, err := l.Launch(ctx, ec2sim.LaunchSpec{InstanceID: fmt.Sprintf("i-0000000000vmcpu%d", i), Root: ec2sim.RootSource{Image: img},
		AuthorizedKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), LoginUsers: []string{"admin"},
		ImageID: "ami-00000000000vmcpu", InstanceType: "m3.medium", Region: "us-east-1", Zone: "us-east-1a",
		Virtualization: "hvm", RootDeviceName: "/dev/xvda", KeyName: "vmcpu"})
	if err != nil {
		return err
	}
	defer inst.Terminate(context.Background())
	banner := time.Since(start)
	var cl *ssh.Client
	for {
		cl, err = ssh.Dial("tcp", inst.PrivateIP()+":22", &ssh.ClientConfig{User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("SSH: %w", err)
		case <-time.After(time.Second):
		}
	}
	defer cl.Close()
	login := time.Since(start)
	up, err := run(cl, nil, "cut -d' ' -f1 /proc/uptime")
	if err != nil {
		return err
	}
	if _, err := run(cl, bin, "cat > /tmp/isb && chmod +x /tmp/isb"); err != nil {
		return err
	}
	// mke2fs -d of /usr/share, then bundle-image of it; bash's time, real user sys.
	out, err := run(cl, nil, `set -e; TIMEFORMAT='%R %U %S'; cd /tmp
m=$( { time sudo mke2fs -q -t ext4 -d /usr/share img 1G; } 2>&1 )
data=$(du -sm /usr/share | cut -f1)
b=$( { time sudo ./isb bundle-image -i img -u 123456789012 -d out -p vmcpu >/dev/null; } 2>&1 )
echo "$m|$b|${data}"`)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	parts := strings.Split(strings.TrimSpace(out), "|")
	if len(parts) != 3 {
		return fmt.Errorf("unexpected output %q", out)
	}
	mk := strings.Fields(parts[0])
	bu := strings.Fields(parts[1])
	if len(mk) == 0 || len(bu) != 3 {
		return fmt.Errorf("unexpected timings %q", out)
	}
	fmt.Printf("%-10s %7.1fs %7.1fs %7ss %10s %10s %s/%s/%s s, %s MiB of /usr/share\n", cpu, banner.Seconds(), login.Seconds(), strings.TrimSpace(up),
		mk[0], bu[0], bu[0], bu[1], bu[2], parts[2])
	if *diag {
		// Where the boot's time went, for trimming the seed images.
		d, _ := run(cl, nil, "systemd-analyze; systemd-analyze blame | head -20; systemd-analyze critical-chain ssh.service; sudo cloud-init analyze blame 2>/dev/null | head -30; grep -c . /proc/cpuinfo; grep -m1 flags /proc/cpuinfo")
		fmt.Fprintf(os.Stderr, "--- %s: boot diagnostics\n%s\n", cpu, d)
	}
	return nil
}

func run(cl *ssh.Client, stdin []byte, cmd string) (string, error) {
	s, err := cl.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	if stdin != nil {
		s.Stdin = bytes.NewReader(stdin)
	}
	b, err := s.CombinedOutput(cmd)
	return string(b), err
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vmcpu:", err)
	os.Exit(1)
}
