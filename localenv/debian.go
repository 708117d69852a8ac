//go:build linux

package localenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
