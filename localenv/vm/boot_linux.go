package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// pvGrubConfigs are where PV-GRUB looks for its configuration, in order.
var pvGrubConfigs = []string{"/boot/grub/menu.lst", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/grub/menu.lst", "/grub/grub.cfg"}

// debugfsFile reads one file of the ext2/3/4 file system image img without mounting it
// (debugfs, read-only), following symbolic links.
func debugfsCat(ctx context.Context, img, p string) ([]byte, error) {
	real, err := debugfsResolve(ctx, img, p)
	if err != nil {
		return nil, err
	}
	out, stderr, err := debugfs(ctx, img, "cat "+real)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 && strings.Contains(stderr, "not found") {
		return nil, fmt.Errorf("%s: %w", p, os.ErrNotExist)
	}
	return out, nil
}

// debugfsDump copies the file p of img to the host file dst.
func debugfsDump(ctx context.Context, img, p, dst string) error {
	real, err := debugfsResolve(ctx, img, p)
	if err != nil {
		return err
	}
	_, stderr, err := debugfs(ctx, img, "dump "+real+" "+dst)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dst); err != nil || fi.Size() == 0 {
		return fmt.Errorf("extracting %s from %s: %s", p, img, strings.TrimSpace(lastLine(stderr)))
	}
	return nil
}

var fastLink = regexp.MustCompile(`Fast link dest: "(.*)"`)

// debugfsResolve follows symbolic links in p's last component (vmlinuz -> boot/vmlinuz-6.1...).
func debugfsResolve(ctx context.Context, img, p string) (string, error) {
	for range 8 {
		if err := checkDebugfsPath(p); err != nil {
			return "", err
		}
		out, stderr, err := debugfs(ctx, img, "stat "+p)
		if err != nil {
			return "", err
		}
		s := string(out)
		if !strings.Contains(s, "Type: symlink") {
			if !strings.Contains(s, "Inode:") {
				return "", fmt.Errorf("%s: %w (%s)", p, os.ErrNotExist, strings.TrimSpace(lastLine(stderr)))
			}
			return p, nil
		}
		m := fastLink.FindStringSubmatch(s)
		if m == nil {
			return "", fmt.Errorf("%s is a symbolic link debugfs cannot read (a slow link); point the boot config at the file itself", p)
		}
		t := m[1]
		if !strings.HasPrefix(t, "/") {
			t = path.Join(path.Dir(p), t)
		}
		p = t
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}

func checkDebugfsPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\"\n\t ") {
		return fmt.Errorf("boot file path %q: want an absolute path without spaces or quotes", p)
	}
	return nil
}

func debugfs(ctx context.Context, img, request string) (stdout []byte, stderr string, err error) {
	var eb bytes.Buffer
	cmd := exec.CommandContext(ctx, "debugfs", "-R", request, img)
	cmd.Stderr = &eb
	out, err := cmd.Output()
	if err != nil {
		return nil, eb.String(), fmt.Errorf("debugfs -R %q %s (Debian package e2fsprogs): %v: %s", request, img, err, strings.TrimSpace(eb.String()))
	}
	return out, eb.String(), nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// pvBoot does what PV-GRUB does for a paravirtual AMI: it reads the boot config from
// the root file system image img, copies the default entry's kernel and initrd into
// dir, and returns them with the command line the guest boots with.
func pvBoot(ctx context.Context, img, dir string) (kernel, initrd, cmdline string, err error) {
	var cfg []byte
	var cfgPath string
	for _, p := range pvGrubConfigs {
		b, err := debugfsCat(ctx, img, p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", "", "", fmt.Errorf("reading the paravirtual AMI's boot config: %w (a paravirtual AMI's image must be an ext2/3/4 file system)", err)
		}
		cfg, cfgPath = b, p
		break
	}
	if cfgPath == "" {
		return "", "", "", fmt.Errorf("the paravirtual AMI image %s has none of %s: PV-GRUB finds nothing to boot", img, strings.Join(pvGrubConfigs, ", "))
	}
	b, err := ReadPVGrubConfig(bytes.NewReader(cfg))
	if err != nil {
		return "", "", "", fmt.Errorf("the AMI's %s: %w", cfgPath, err)
	}
	kernel = filepath.Join(dir, "kernel")
	if err := debugfsDump(ctx, img, b.Kernel, kernel); err != nil {
		return "", "", "", fmt.Errorf("the kernel that %s names: %w", cfgPath, err)
	}
	if b.Initrd != "" {
		initrd = filepath.Join(dir, "initrd")
		if err := debugfsDump(ctx, img, b.Initrd, initrd); err != nil {
			return "", "", "", fmt.Errorf("the initrd that %s names: %w", cfgPath, err)
		}
	}
	return kernel, initrd, pvCmdline(b.Cmdline), nil
}

var xenRoot = regexp.MustCompile(`(^|\s)root=/dev/(xvda1|sda1|xvde1|sda)(\s|$)`)

// pvCmdline adapts a Xen PV command line to the VM: the root file system that Xen
// shows as a partition-less /dev/xvda1 (or sda1) is the guest's first virtio disk,
// /dev/vda, and the console that Xen calls hvc0 is the serial port (the console log).
// root=UUID= and root=LABEL= stay as they are.
func pvCmdline(c string) string {
	c = xenRoot.ReplaceAllString(c, "${1}root=/dev/vda${3}")
	if !strings.Contains(c, "console=ttyS0") {
		c = strings.TrimSpace(c + " console=ttyS0")
	}
	// Under TCG on a loaded host the IO-APIC timer check can miss its ticks and
	// panic; Xen guests never run it, so skipping it changes nothing the AMI chose.
	if !strings.Contains(c, "no_timer_check") {
		c += " no_timer_check"
	}
	return c
}
