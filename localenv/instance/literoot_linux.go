package instance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// LiteRootPackages are the Debian packages the lite root is unpacked from. The other
// libraries the binaries need come from the host (the same Debian release).
var LiteRootPackages = []string{
	"busybox-static",
	"openssh-server", "openssh-client", "openssh-sftp-server",
	"libwrap0", "libnsl2", "libtirpc3", "libtirpc-common",
	"sudo", "libpam-modules",
}

// liteRootVersion changes whenever the tree BuildLiteRoot makes changes, so that old
// cached tarballs are not reused.
const liteRootVersion = "lite-root-3"

// CacheDir is where downloaded .debs and lite-root tarballs are kept across runs:
// $INSTANCESTORE_TEST_CACHE, or /var/cache/instancestore-test.
func CacheDir() string {
	if d := os.Getenv("INSTANCESTORE_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/instancestore-test"
}

// BuildLiteRoot makes a small instance root in dir (which must be empty or absent):
// busybox, OpenSSH server, client and sftp-server, and sudo, with the users root and
// admin (uid 1000, `admin ALL=(ALL) NOPASSWD: ALL`), both locked for passwords and
// open to keys. It unpacks the cached tarball LiteRootTarball makes (about a second
// the first time after the .debs are cached) and gives the copy fresh host keys.
func BuildLiteRoot(ctx context.Context, dir string) error {
	tarball, err := LiteRootTarball(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lite root: %w", err)
	}
	if ents, err := os.ReadDir(dir); err != nil {
		return fmt.Errorf("lite root: %w", err)
	} else if len(ents) > 0 {
		return fmt.Errorf("lite root: directory %s is not empty", dir)
	}
	if err := run(ctx, "tar", "-C", dir, "--numeric-owner", "-xpf", tarball); err != nil {
		return fmt.Errorf("unpacking lite root: %w", err)
	}
	return writeHostKeys(dir)
}

// LiteRootTarball returns the path of a tar of the lite root (numeric owners, device
// nodes, setuid sudo), building it in CacheDir when missing. The tarball can be
// unpacked with `tar --numeric-owner -xpf` or fed to image builders.
func LiteRootTarball(ctx context.Context) (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("building the lite root needs root (device nodes, file owners)")
	}
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("lite root cache: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cache, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	debs, err := downloadDebs(ctx, filepath.Join(cache, "debs"))
	if err != nil {
		return "", err
	}
	key, err := liteRootKey(debs)
	if err != nil {
		return "", err
	}
	tarball := filepath.Join(cache, "lite-root-"+key+".tar")
	if exists(tarball) {
		return tarball, nil
	}
	work, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	if err := buildTree(ctx, root, debs); err != nil {
		return "", fmt.Errorf("building lite root: %w", err)
	}
	tmp := filepath.Join(work, "root.tar")
	if err := run(ctx, "tar", "-C", root, "--numeric-owner", "-cpf", tmp, "."); err != nil {
		return "", fmt.Errorf("packing lite root: %w", err)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", err
	}
	return tarball, nil
}

// liteRootKey names a tarball after what went into it: the builder version, the .debs
// and the host's C library (the source of the copied libraries).
func liteRootKey(debs []string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, liteRootVersion)
	for _, d := range debs {
		fmt.Fprintln(h, filepath.Base(d))
	}
	for _, d := range libDirs {
		if fi, err := os.Stat(filepath.Join(d, "libc.so.6")); err == nil {
			fmt.Fprintln(h, d, fi.Size(), fi.ModTime().UnixNano())
			break
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// downloadDebs returns the .deb files of LiteRootPackages in dir, downloading the
// missing ones with apt-get (updating the package lists once if apt cannot find them).
func downloadDebs(ctx context.Context, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	find := func() (found []string, missing []string) {
		for _, p := range LiteRootPackages {
			m, _ := filepath.Glob(filepath.Join(dir, p+"_*.deb"))
			if len(m) == 0 {
				missing = append(missing, p)
				continue
			}
			sort.Strings(m)
			found = append(found, m[len(m)-1])
		}
		return found, missing
	}
	found, missing := find()
	if len(missing) == 0 {
		return found, nil
	}
	download := func() error {
		args := append([]string{"-q", "-o", "APT::Sandbox::User=root", "download"}, missing...)
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get download %s: %w: %s", strings.Join(missing, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := download(); err != nil {
		// A fresh machine may have no package lists yet.
		if uerr := run(ctx, "apt-get", "-q", "update"); uerr != nil {
			return nil, fmt.Errorf("%w (and apt-get update failed: %v)", err, uerr)
		}
		if err := download(); err != nil {
			return nil, err
		}
	}
	found, missing = find()
	if len(missing) > 0 {
		return nil, fmt.Errorf("apt-get download left %s missing in %s", strings.Join(missing, " "), dir)
	}
	return found, nil
}

// buildTree unpacks the .debs into root and makes it a bootable-enough tree for sshd.
func buildTree(ctx context.Context, root string, debs []string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	for _, d := range debs {
		if err := run(ctx, "dpkg-deb", "-x", d, root); err != nil {
			return err
		}
	}
	// Documentation is most of the size and nothing needs it.
	for _, d := range []string{"usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian", "usr/share/info"} {
		if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
			return err
		}
	}
	if err := usrMerge(root); err != nil {
		return err
	}
	if err := installBusybox(ctx, root); err != nil {
		return err
	}
	if err := copyHostLibs(root); err != nil {
		return err
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{"etc/ssh", 0o755}, {"etc/sudoers.d", 0o755}, {"etc/pam.d", 0o755},
		{"root", 0o700}, {"root/.ssh", 0o700}, {"home/admin", 0o755}, {"home/admin/.ssh", 0o700},
		{"run/sshd", 0o755}, {"var/empty", 0o755}, {"var/log", 0o755}, {"var/lib/sudo", 0o711},
		{"tmp", 0o777 | os.ModeSticky}, {"proc", 0o555}, {"sys", 0o555}, {"dev/pts", 0o755}, {"mnt", 0o755},
	} {
		p := filepath.Join(root, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, d.mode); err != nil {
			return err
		}
	}
	for _, p := range []string{"home/admin", "home/admin/.ssh"} {
		if err := os.Chown(filepath.Join(root, p), 1000, 1000); err != nil {
			return err
		}
	}
	for _, f := range liteRootFiles {
		if err := os.WriteFile(filepath.Join(root, f.path), []byte(f.data), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(root, f.path), f.mode); err != nil {
			return err
		}
	}
	if err := makeDevices(root); err != nil {
		return err
	}
	return writeHostKeys(root)
}

var liteRootFiles = []struct {
	path string
	mode os.FileMode
	data string
}{
	{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n" +
		"admin:x:1000:1000:admin:/home/admin:/bin/sh\n" +
		"sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
	{"etc/group", 0o644, "root:x:0:\nshadow:x:42:\nsudo:x:27:admin\nadmin:x:1000:\nnogroup:x:65534:\n"},
	// "*" and not "!": sshd without PAM treats "!" as a locked account and refuses
	// even key logins; "*" only means no password can match.
	{"etc/shadow", 0o640, "root:*:19000:0:99999:7:::\nadmin:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"},
	{"etc/gshadow", 0o640, "root:*::\nshadow:*::\nsudo:*::admin\nadmin:*::\nnogroup:*::\n"},
	{"etc/nsswitch.conf", 0o644, "passwd: files\ngroup: files\nshadow: files\nhosts: files\n"},
	{"etc/hosts", 0o644, "127.0.0.1 localhost\n::1 localhost\n"},
	{"etc/hostname", 0o644, "lite\n"},
	{"etc/profile", 0o644, "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"},
	{"etc/sudoers.d/admin", 0o440, "admin ALL=(ALL) NOPASSWD: ALL\n"},
	// Debian's /etc/pam.d/sudo includes libpam-runtime's common-* files, which the
	// lite root does not have: say the same with pam_unix directly.
	{"etc/pam.d/sudo", 0o644, "auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_unix.so\n"},
	{"etc/pam.d/other", 0o644, "auth required pam_deny.so\naccount required pam_deny.so\npassword required pam_deny.so\nsession required pam_deny.so\n"},
	{"etc/ssh/sshd_config", 0o644, "# Lite root: keys only. Instances started by localenv/instance use their own config.\n" +
		"UsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n" +
		"PrintMotd no\nSubsystem sftp /usr/lib/openssh/sftp-server\n"},
}

// usrMerge moves /bin, /sbin, /lib and /lib64 into /usr and leaves symlinks, the
// layout of Debian bookworm.
func usrMerge(root string) error {
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		top := filepath.Join(root, d)
		usr := filepath.Join(root, "usr", d)
		if err := os.MkdirAll(usr, 0o755); err != nil {
			return err
		}
		if fi, err := os.Lstat(top); err == nil && fi.IsDir() {
			if err := mergeDir(top, usr); err != nil {
				return fmt.Errorf("usr-merge of /%s: %w", d, err)
			}
		}
		if err := os.Symlink("usr/"+d, top); err != nil {
			return err
		}
	}
	return nil
}

// mergeDir moves every entry of src into dst, merging directories present in both,
// and removes src.
func mergeDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		dfi, err := os.Lstat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Rename(s, d); err != nil {
				return err
			}
		case err != nil:
			return err
		case e.IsDir() && dfi.IsDir():
			if err := mergeDir(s, d); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s exists in both / and /usr", strings.TrimPrefix(d, filepath.Dir(filepath.Dir(dst))))
		}
	}
	return os.Remove(src)
}

// installBusybox links every busybox applet that no package provides into /usr/bin.
func installBusybox(ctx context.Context, root string) error {
	bb := filepath.Join(root, "usr/bin/busybox")
	out, err := exec.CommandContext(ctx, bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("listing busybox applets: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		taken := false
		for _, d := range []string{"usr/bin", "usr/sbin"} {
			if _, err := os.Lstat(filepath.Join(root, d, applet)); err == nil {
				taken = true
			}
		}
		if !taken {
			if err := os.Symlink("busybox", filepath.Join(root, "usr/bin", applet)); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeDevices creates the few device nodes a chroot needs when nothing mounts /dev.
func makeDevices(root string) error {
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		p := filepath.Join(root, "dev", n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			return err
		}
	}
	return os.Symlink("pts/ptmx", filepath.Join(root, "dev/ptmx"))
}

// writeHostKeys gives the root its own ed25519 and ECDSA host keys (OpenSSH format).
func writeHostKeys(root string) error {
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	for _, k := range []struct {
		name string
		priv any
	}{{"ed25519", edPriv}, {"ecdsa", ecPriv}} {
		block, err := ssh.MarshalPrivateKey(k.priv, "root@lite")
		if err != nil {
			return err
		}
		signer, err := ssh.NewSignerFromKey(k.priv)
		if err != nil {
			return err
		}
		base := filepath.Join(root, "etc/ssh/ssh_host_"+k.name+"_key")
		if err := os.WriteFile(base, pem.EncodeToMemory(block), 0o600); err != nil {
			return err
		}
		pub := bytes.TrimSpace(ssh.MarshalAuthorizedKey(signer.PublicKey()))
		if err := os.WriteFile(base+".pub", append(pub, " root@lite\n"...), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// lockFile takes an exclusive flock on path, waiting for other processes (parallel
// test packages build the same cache).
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
