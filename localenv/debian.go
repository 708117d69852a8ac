//go:build linux

package localenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

// DebianAMIName is the optional Debian base AMI (Options.Debian).
const DebianAMIName = "instancestore-debian-12-x86_64"

// debianRootVersion changes whenever debianSetup changes, so old tarballs are not reused.
const debianRootVersion = "debian-12-minbase-1"

// DebianMirror is where debootstrap fetches bookworm from.
var DebianMirror = "http://deb.debian.org/debian"

// debianSetup makes a debootstrap tree an instance root: the admin login user (key
// only, passwordless sudo) like Debian's cloud images, and no baked-in host keys.
const debianSetup = `set -e
R="$1"
grep -q '^admin:' "$R/etc/passwd" || {
  echo 'admin:x:1000:1000:Debian:/home/admin:/bin/bash' >> "$R/etc/passwd"
  echo 'admin:x:1000:' >> "$R/etc/group"
  echo 'admin:*:19000:0:99999:7:::' >> "$R/etc/shadow"
}
sed -i 's/^root:[^:]*:/root:*:/' "$R/etc/shadow"
mkdir -p "$R/home/admin/.ssh" "$R/root/.ssh"
chmod 700 "$R/home/admin/.ssh" "$R/root/.ssh"
chown -R 1000:1000 "$R/home/admin"
echo 'admin ALL=(ALL) NOPASSWD: ALL' > "$R/etc/sudoers.d/90-admin"
chmod 440 "$R/etc/sudoers.d/90-admin"
rm -f "$R"/etc/ssh/ssh_host_*
echo instancestore-debian > "$R/etc/hostname"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
`

// DebianRootTarball returns a tar (numeric owners) of a Debian 12 minbase root with
// OpenSSH and sudo, building it with debootstrap into instance.CacheDir() when missing:
// several minutes the first time, then cached.
func DebianRootTarball(ctx context.Context, logf func(string, ...any)) (string, error) {
	if err := RequireRoot(); err != nil {
		return "", err
	}
	cache := instance.CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tarball := filepath.Join(cache, debianRootVersion+".tar")
	lock, err := os.OpenFile(filepath.Join(cache, ".debian.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("building the Debian root needs debootstrap (Debian package debootstrap): %w", err)
	}
	work, err := os.MkdirTemp(cache, "debian-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	if logf != nil {
		logf("localenv: debootstrap bookworm (minbase + openssh-server + sudo) from %s; cached afterwards", DebianMirror)
	}
	if out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include=openssh-server,sudo", "bookworm", root, DebianMirror).CombinedOutput(); err != nil {
		return "", fmt.Errorf("debootstrap: %v\n%s", err, tailString(string(out), 2000))
	}
	if out, err := exec.CommandContext(ctx, "sh", "-c", debianSetup, "sh", root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("setting up the Debian root: %v: %s", err, out)
	}
	tmp := filepath.Join(work, "root.tar")
	if out, err := exec.CommandContext(ctx, "tar", "-C", root, "--numeric-owner", "-cpf", tmp, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("packing the Debian root: %v: %s", err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", err
	}
	return tarball, nil
}

// BuildDebianRoot unpacks the (cached) Debian root into dir, which must not exist or be
// empty.
func BuildDebianRoot(ctx context.Context, dir string, logf func(string, ...any)) error {
	tarball, err := DebianRootTarball(ctx, logf)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "tar", "-C", dir, "--numeric-owner", "-xpf", tarball).CombinedOutput(); err != nil {
		return fmt.Errorf("unpacking the Debian root: %v: %s", err, out)
	}
	return nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// debianVMRootVersion changes whenever debianVMSetup (or the units it installs) change.
const debianVMRootVersion = "debian-12-vm-6"

// debianVMPackages make the minbase root a machine that boots on its own: a kernel
// with virtio (and Xen front-ends, like EC2's), GRUB 2 for BIOS boot, systemd and udev,
// dbus and logind (login sessions, hostnamectl), and Debian's cloud-init for the EC2
// metadata service; curl for the forward relay unit (guestForwardsScript). OpenSSH
// server and sudo come with the minbase root.
var debianVMPackages = []string{"linux-image-cloud-amd64", "initramfs-tools", "grub-pc", "systemd-sysv", "udev",
	"cloud-init", "e2fsprogs", "ca-certificates", "iproute2", "procps", "less", "xfsprogs", "rsync", "curl",
	"dbus", "libpam-systemd"}

// debianVMSetup installs the packages into the minbase tree $1 (network through the
// host's resolv.conf) and configures it the way Debian's EC2 images are: serial
// console, DHCP on the first NIC (systemd-networkd), root by label, cloud-init with
// the Ec2 datasource only and the admin default user, no baked-in host keys.
const debianVMSetup = `set -e
R="$1"; shift
cp /etc/resolv.conf "$R/etc/resolv.conf"
mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
trap 'umount -R "$R/sys" 2>/dev/null; umount -R "$R/dev" 2>/dev/null; umount "$R/proc" 2>/dev/null' EXIT
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
chroot "$R" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get install -y -qq --no-install-recommends "$@"
rm -f "$R/usr/sbin/policy-rc.d"
echo 'LABEL=cloudimg-rootfs / ext4 defaults,errors=remount-ro 0 1' > "$R/etc/fstab"
mkdir -p "$R/etc/systemd/network"
printf '[Match]\nName=eth* en*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\n\n[DHCPv4]\nUseDomains=true\n' > "$R/etc/systemd/network/10-ec2.network"
chroot "$R" systemctl enable systemd-networkd.service >/dev/null
mkdir -p "$R/etc/cloud/cloud.cfg.d"
cat > "$R/etc/cloud/cloud.cfg.d/90-instancestore-localenv.cfg" <<'CFG'
datasource_list: [ Ec2, None ]
datasource:
  Ec2:
    metadata_urls: [ 'http://169.254.169.254' ]
    timeout: 5
    max_wait: 60
    strict_id: false
network: {config: disabled}
# The instance's hostname (ip-A-B-C-D...) on 127.0.1.1: there is no VPC DNS here to
# resolve it, and sudo warns about a hostname it cannot resolve.
manage_etc_hosts: localhost
# No locales package: glibc's built-in C.UTF-8, not cloud-init's en_US.UTF-8 (its
# locale module fails without it, and "cloud-init status" then reports an error).
locale: C.UTF-8
system_info:
  default_user:
    name: admin
    lock_passwd: true
    gecos: Debian
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
CFG
# The initramfs gets the disk drivers of every platform the image may boot on (Xen
# blkfront on Xen instances, NVMe on Nitro, virtio here), not only the build host's.
printf '%s\n' xen-blkfront nvme virtio_blk virtio_scsi virtio_pci ext4 >> "$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -u -k all
# Serial console for GRUB and the kernel (GetConsoleOutput shows ttyS0): what an
# in-guest update-grub writes too.
mkdir -p "$R/etc/default/grub.d"
cat > "$R/etc/default/grub.d/50-instancestore.cfg" <<'CFG'
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 net.ifnames=0 no_timer_check"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
CFG
cat > "$R/etc/systemd/system/instancestore-ssh-hostkeys.service" <<'UNIT'
# SSH host keys are made at first boot, never baked into the image. cloud-init's ssh
# module makes them when it runs (it is ordered before ssh.service); this unit makes
# any still missing, so sshd starts even when cloud-init found no datasource or is
# disabled.
[Unit]
Description=Generate missing SSH host keys
After=cloud-init.service
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
UNIT
chroot "$R" systemctl enable instancestore-ssh-hostkeys.service >/dev/null
install -m 0755 /dev/stdin "$R/usr/local/sbin/instancestore-localenv-forwards" <<'SCRIPT'
` + guestForwardsScript + `SCRIPT
cat > "$R/etc/systemd/system/instancestore-localenv-forwards.service" <<'UNIT'
` + guestForwardsUnit + `UNIT
chroot "$R" systemctl enable instancestore-localenv-forwards.service >/dev/null
rm -f "$R"/etc/ssh/ssh_host_* "$R/etc/machine-id" "$R/var/lib/dbus/machine-id"
: > "$R/etc/machine-id"
rm -f "$R/etc/resolv.conf"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/var/lib/cloud/*
# What Debian's slim images leave out, and what every instance of a seed would
# otherwise copy through the agent at TCG speed: apt's package caches (apt-get clean;
# 75 MiB, rebuilt by the next apt-get update), translations (46 MiB), manuals and docs
# but their copyright files (21 MiB). The root is 391 MiB without them, 530 MiB with.
chroot "$R" apt-get clean
rm -rf "$R"/usr/share/locale/* "$R"/usr/share/man/* "$R"/usr/share/info/*
find "$R"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
find "$R"/usr/share/doc -mindepth 1 -type d -empty -delete
`

// DebianVMRootTarball returns a tar (numeric owners) of a bootable Debian 12 root (the
// minbase root of DebianRootTarball plus debianVMPackages, see debianVMSetup), built
// into instance.CacheDir() when missing: about a minute or two the first time (apt
// from DebianMirror), then cached.
func DebianVMRootTarball(ctx context.Context, logf func(string, ...any)) (string, error) {
	base, err := DebianRootTarball(ctx, logf)
	if err != nil {
		return "", err
	}
	cache := instance.CacheDir()
	tarball := filepath.Join(cache, debianVMRootVersion+".tar")
	lock, err := os.OpenFile(filepath.Join(cache, ".debian-vm.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil
	}
	work, err := os.MkdirTemp(cache, "debian-vm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "tar", "-C", root, "--numeric-owner", "-xpf", base).CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpacking the Debian root: %v: %s", err, out)
	}
	if logf != nil {
		logf("localenv: installing the kernel, GRUB 2, systemd and cloud-init into the Debian root (apt from %s); cached afterwards", DebianMirror)
	}
	args := append([]string{"-c", debianVMSetup, "sh", root}, debianVMPackages...)
	if out, err := exec.CommandContext(ctx, "sh", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("making the Debian root bootable: %v\n%s", err, tailString(string(out), 3000))
	}
	tmp := filepath.Join(work, "root.tar")
	if out, err := exec.CommandContext(ctx, "tar", "-C", root, "--numeric-owner", "-cpf", tmp, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("packing the Debian root: %v: %s", err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", err
	}
	return tarball, nil
}

// DebianVMKernel returns the kernel (bzImage) of the bootable Debian root
// (DebianVMRootTarball), copied out of the tarball into instance.CacheDir() once. The
// VM launcher's KVM probe boots it (vm.VMLauncher.ProbeKernel): a host whose KVM runs
// firmware but hangs a kernel then gets TCG instead of guests that never boot.
func DebianVMKernel(ctx context.Context, logf func(string, ...any)) (string, error) {
	tarball, err := DebianVMRootTarball(ctx, logf)
	if err != nil {
		return "", err
	}
	kernel := filepath.Join(instance.CacheDir(), debianVMRootVersion+".vmlinuz")
	if _, err := os.Stat(kernel); err == nil {
		return kernel, nil
	}
	list, err := exec.CommandContext(ctx, "tar", "-tf", tarball, "--wildcards", "./boot/vmlinuz-*").Output()
	if err != nil {
		return "", fmt.Errorf("finding the kernel in %s: %w", tarball, err)
	}
	name, _, _ := strings.Cut(strings.TrimSpace(string(list)), "\n")
	if name == "" {
		return "", fmt.Errorf("%s holds no ./boot/vmlinuz-*", tarball)
	}
	f, err := os.CreateTemp(instance.CacheDir(), "vmlinuz-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return "", err
	}
	cmd := exec.CommandContext(ctx, "tar", "-xOf", tarball, name)
	cmd.Stdout = f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	if cerr := f.Close(); runErr == nil {
		runErr = cerr
	}
	if runErr != nil {
		return "", fmt.Errorf("copying %s out of %s: %v %s", name, tarball, runErr, stderr.String())
	}
	if err := os.Rename(f.Name(), kernel); err != nil {
		return "", err
	}
	return kernel, nil
}
