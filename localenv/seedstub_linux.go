//go:build linux

package localenv

// TEMPORARY (vm branch): a stand-in for the seeds engineer's SeedImage, with the same
// signature, so that the VM launcher can be tested before the real seeds land. It
// builds only the paravirtual seed. Drop this file at merge.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

// SeedKind names a base AMI image SeedImage builds.
type SeedKind string

const (
	SeedHVMMBR SeedKind = "hvm-mbr"
	SeedHVMGPT SeedKind = "hvm-gpt"
	SeedPV     SeedKind = "pv"
)

const stubPVVersion = "stub-debian-12-pv-1"

// stubForwards is the guest's relay unit: it reads the forwards the metadata service
// lists and relays each LISTEN address to its TARGET with systemd-socket-proxyd.
const stubForwards = `#!/bin/sh
# instancestore-localenv: make host services reachable at their own host:port.
for i in $(seq 1 60); do
  f=$(python3 -c 'import urllib.request;print(urllib.request.urlopen("http://169.254.169.254/instancestore-localenv/forwards",timeout=2).read().decode())' 2>/dev/null) && break
  sleep 1
done
n=0
echo "$f" | while read listen target; do
  [ -n "$listen" ] || continue
  n=$((n+1))
  systemd-run --unit="instancestore-forward-$n" /usr/bin/systemd-socket-activate -l "$listen" /lib/systemd/systemd-socket-proxyd "$target"
done
`

const stubForwardsUnit = `[Unit]
Description=instancestore-localenv: relay host services into the guest
After=network.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/instancestore-forwards
[Install]
WantedBy=multi-user.target
`

// SeedImage returns a raw image of the base AMI kind, built into instance.CacheDir()
// when missing. The stub builds SeedPV only: an ext4 image of the bootable Debian root
// with a PV-GRUB menu.lst.
func SeedImage(ctx context.Context, kind SeedKind, logf func(string, ...any)) (string, error) {
	if kind != SeedPV {
		return "", fmt.Errorf("seed %s: not built by this stand-in (localenv/seedstub_linux.go builds %s only)", kind, SeedPV)
	}
	tarball, err := DebianVMRootTarball(ctx, logf)
	if err != nil {
		return "", err
	}
	cache := instance.CacheDir()
	img := filepath.Join(cache, stubPVVersion+".img")
	lock, err := os.OpenFile(filepath.Join(cache, ".stub-pv.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	work, err := os.MkdirTemp(cache, "stub-pv-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	if err := BuildDebianRootFrom(ctx, tarball, root); err != nil {
		return "", err
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) == 0 {
		return "", fmt.Errorf("the Debian VM root has no /boot/vmlinuz-*")
	}
	sort.Strings(kernels)
	ver := strings.TrimPrefix(filepath.Base(kernels[len(kernels)-1]), "vmlinuz-")
	menu := fmt.Sprintf("default 0\ntimeout 0\n\ntitle Debian 12 (%s)\nroot (hd0)\nkernel /boot/vmlinuz-%s root=LABEL=cloudimg-rootfs ro console=hvc0 net.ifnames=0\ninitrd /boot/initrd.img-%s\n", ver, ver, ver)
	files := map[string]string{
		"boot/grub/menu.lst":                                menu,
		"usr/local/sbin/instancestore-forwards":             stubForwards,
		"etc/systemd/system/instancestore-forwards.service": stubForwardsUnit,
	}
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, []byte(content), 0o755); err != nil {
			return "", err
		}
	}
	want := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(want, 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink("/etc/systemd/system/instancestore-forwards.service", filepath.Join(want, "instancestore-forwards.service")); err != nil && !os.IsExist(err) {
		return "", err
	}
	tmp := filepath.Join(work, "pv.img")
	if logf != nil {
		logf("localenv: making the paravirtual seed image (stand-in) %s", img)
	}
	if err := MakeRootImage(ctx, root, tmp, RootImageSize); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, img); err != nil {
		return "", err
	}
	return img, nil
}

// BuildDebianRootFrom unpacks a root tarball into dir.
func BuildDebianRootFrom(ctx context.Context, tarball, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "tar", "-C", dir, "--numeric-owner", "-xpf", tarball).CombinedOutput(); err != nil {
		return fmt.Errorf("unpacking %s: %v: %s", tarball, err, out)
	}
	return nil
}
