package volume

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// The checks below look at the image's copy of the root (never at the running source)
// for what would stop it booting on the Xen HVM instance types that run instance
// store-backed AMIs (c3, d2, i2, m3, r3, x1: legacy BIOS, disks /dev/xvd*), fix in the
// image what can be fixed safely and refuse what cannot.

// checkBootOnRoot refuses a volume whose /boot is a filesystem of its own (Ubuntu's
// cloud images since 23.04 have it on partition 16): the image holds the root
// partition only, and its boot loader (core.img in the BIOS boot partition, grub.cfg)
// looks for /boot by that partition's UUID, so the new AMI would not boot. Checked
// before imaging.
func checkBootOnRoot(p *Plan) error {
	m, ok := p.OtherMount("/boot")
	if !ok {
		return nil
	}
	return fmt.Errorf("/boot is a filesystem of its own (%s %s, as in recent Ubuntu cloud images), and the image holds the root filesystem only: the boot loader looks for /boot on its partition, so the AMI would not boot. Sources whose /boot is on the root filesystem are supported (Debian 12, Ubuntu 22.04, Amazon Linux 2023); move /boot onto the root filesystem on the source first, or use one of those", m.FSType, m.Source)
}

// xenBoot runs the checks on the image mounted at root, whose root filesystem has the
// given UUID, for the kernel release rel (the running kernel's). It returns what it
// changed in the image.
func xenBoot(root, uuid, rel string, warn func(string)) ([]string, error) {
	if err := checkXenFrontends(root, rel, warn); err != nil {
		return nil, err
	}
	var changes []string
	c, err := fixFstabRoot(root, uuid, warn)
	if err != nil {
		return nil, err
	}
	changes = append(changes, c...)
	c, err = fixGrubRoot(root, uuid)
	if err != nil {
		return nil, err
	}
	return append(changes, c...), nil
}

// checkXenFrontends fails when the kernel rel has no Xen block or network front-end,
// built in or (for the block one, which the root needs) as a module in its initramfs.
func checkXenFrontends(root, rel string, warn func(string)) error {
	cfgPath := filepath.Join(root, "boot", "config-"+rel)
	data, err := os.ReadFile(cfgPath)
	if errors.Is(err, os.ErrNotExist) {
		warn(fmt.Sprintf("cannot check the kernel for Xen drivers: /boot/config-%s is not in the image; the image boots on the instance store types (Xen) only if its kernel has xen-blkfront and xen-netfront", rel))
		return nil
	} else if err != nil {
		return fmt.Errorf("reading the kernel configuration /boot/config-%s: %w", rel, err)
	}
	opts := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			opts[k] = v
		}
	}
	var missing []string
	for _, o := range []string{"CONFIG_XEN_BLKDEV_FRONTEND", "CONFIG_XEN_NETDEV_FRONTEND"} {
		if v := opts[o]; v != "y" && v != "m" {
			missing = append(missing, o)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the kernel %s has no Xen front-end drivers (%s not set in /boot/config-%s): the instance types that run instance store-backed AMIs are Xen HVM and need xen-blkfront for the disk and xen-netfront for the network; install a kernel that has them (Debian's linux-image-amd64 or linux-image-cloud-amd64, Ubuntu's linux-aws) and reboot into it before bundling", rel, strings.Join(missing, ", "), rel)
	}
	if opts["CONFIG_XEN_BLKDEV_FRONTEND"] != "m" {
		return nil
	}
	initrd := ""
	for _, n := range []string{"initrd.img-" + rel, "initramfs-" + rel + ".img", "initrd-" + rel} {
		if _, err := os.Stat(filepath.Join(root, "boot", n)); err == nil {
			initrd = filepath.Join(root, "boot", n)
			break
		}
	}
	if initrd == "" {
		return fmt.Errorf("the kernel %s has xen-blkfront as a module but no initramfs was found in /boot (initrd.img-%s or initramfs-%s.img): without it the root disk cannot be found on the Xen instance types; build one that includes xen-blkfront (update-initramfs -u -k %s, or dracut --add-drivers xen-blkfront)", rel, rel, rel, rel)
	}
	names, err := initramfsNames(initrd)
	if err != nil {
		return fmt.Errorf("reading the initramfs /boot/%s: %w", filepath.Base(initrd), err)
	}
	for _, n := range names {
		if b := filepath.Base(n); b == "xen-blkfront.ko" || strings.HasPrefix(b, "xen-blkfront.ko.") {
			return nil
		}
	}
	return fmt.Errorf("the initramfs /boot/%s has no xen-blkfront module: the root disk cannot be found on the Xen instance types that run instance store-backed AMIs; add it (echo xen-blkfront >> /etc/initramfs-tools/modules && update-initramfs -u -k %s, or dracut --add-drivers xen-blkfront -f) in a provisioner before bundling", filepath.Base(initrd), rel)
}

// initramfsNames lists the file names of an initramfs: newc cpio archives one after
// the other, each plain or compressed (an uncompressed early one for microcode, then a
// gzip, zstd or xz main one), with zero padding between them.
func initramfsNames(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	err = archiveNames(bufio.NewReaderSize(f, 1<<20), &names, 0)
	return names, err
}

func archiveNames(br *bufio.Reader, names *[]string, depth int) error {
	for {
		magic, err := br.Peek(6)
		if len(magic) == 0 || err != nil && len(magic) < 6 {
			// The end, or trailing padding shorter than a header.
			return nil
		}
		switch {
		case bytes.Equal(magic, []byte("070701")) || bytes.Equal(magic, []byte("070702")):
			if err := cpioNames(br, names); err != nil {
				return err
			}
		case magic[0] == 0:
			if _, err := br.Discard(1); err != nil {
				return nil
			}
		case depth > 0:
			return fmt.Errorf("unexpected data (%x) inside a compressed archive", magic[:4])
		default:
			var r io.Reader
			switch {
			case magic[0] == 0x1f && magic[1] == 0x8b:
				r, err = gzip.NewReader(br)
			case bytes.Equal(magic[:4], []byte{0x28, 0xb5, 0x2f, 0xfd}):
				var d *zstd.Decoder
				if d, err = zstd.NewReader(br); err == nil {
					defer d.Close()
					r = d
				}
			case bytes.Equal(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
				r, err = xz.NewReader(br)
			default:
				return fmt.Errorf("unknown format (%x): only newc cpio, gzip, zstd and xz are read", magic[:4])
			}
			if err != nil {
				return err
			}
			// The compressed archive runs to the end of the file.
			return archiveNames(bufio.NewReaderSize(r, 1<<20), names, depth+1)
		}
	}
}

// cpioNames reads one newc archive up to its trailer, appending the names.
func cpioNames(r *bufio.Reader, names *[]string) error {
	hdr := make([]byte, 110)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return fmt.Errorf("cpio header: %w", err)
		}
		if m := string(hdr[:6]); m != "070701" && m != "070702" {
			return fmt.Errorf("bad cpio magic %q", m)
		}
		var size, nameSize int64
		if _, err := fmt.Sscanf(string(hdr[54:62]), "%08x", &size); err != nil {
			return fmt.Errorf("cpio file size: %w", err)
		}
		if _, err := fmt.Sscanf(string(hdr[94:102]), "%08x", &nameSize); err != nil {
			return fmt.Errorf("cpio name size: %w", err)
		}
		if nameSize < 1 || nameSize > 4096 {
			return fmt.Errorf("cpio name size %d", nameSize)
		}
		name := make([]byte, nameSize+(4-(110+nameSize)%4)%4)
		if _, err := io.ReadFull(r, name); err != nil {
			return fmt.Errorf("cpio name: %w", err)
		}
		n := string(name[:nameSize-1])
		if n == "TRAILER!!!" {
			return nil
		}
		*names = append(*names, n)
		if _, err := r.Discard(int(size + (4-size%4)%4)); err != nil {
			return fmt.Errorf("cpio data of %s: %w", n, err)
		}
	}
}

// devName matches a root named by a kernel device name that differs between a Nitro
// instance (NVMe), a Xen one (xvd) and others (sd, vd).
var devName = regexp.MustCompile(`^/dev/(nvme[0-9]+n[0-9]+(p[0-9]+)?|xvd[a-z]+[0-9]*|sd[a-z]+[0-9]*|vd[a-z]+[0-9]*|hd[a-z]+[0-9]*)$`)

// fixFstabRoot rewrites, in the image's /etc/fstab, a root entry that names a device
// to UUID=uuid, and warns of other entries naming disk devices.
func fixFstabRoot(root, uuid string, warn func(string)) ([]string, error) {
	p := filepath.Join(root, "etc", "fstab")
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading the image's /etc/fstab: %w", err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	var changes []string
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || !devName.MatchString(f[0]) {
			continue
		}
		if f[1] != "/" {
			if !strings.Contains(","+fieldOr(f, 3)+",", ",nofail,") {
				warn(fmt.Sprintf("/etc/fstab mounts %s on %s by device name: on the Xen instance types the disks are /dev/xvd*, so that mount may fail at boot; name it by UUID= or LABEL=, or add nofail", f[0], f[1]))
			}
			continue
		}
		idx := strings.Index(line, f[0])
		lines[i] = line[:idx] + "UUID=" + uuid + line[idx+len(f[0]):]
		changes = append(changes, fmt.Sprintf("/etc/fstab: the root %s is now UUID=%s (device names differ on the Xen instance types)", f[0], uuid))
	}
	if len(changes) == 0 {
		return nil, nil
	}
	if err := writeKeepingMode(p, []byte(strings.Join(lines, ""))); err != nil {
		return nil, fmt.Errorf("rewriting the image's /etc/fstab: %w", err)
	}
	return changes, nil
}

func fieldOr(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

var grubRootArg = regexp.MustCompile(`(\s)root=(/dev/[A-Za-z0-9]+)(\s|$)`)

// fixGrubRoot rewrites root=/dev/<device> kernel arguments of the image's GRUB
// configuration to root=UUID=uuid.
func fixGrubRoot(root, uuid string) ([]string, error) {
	var changes []string
	for _, rel := range []string{"boot/grub/grub.cfg", "boot/grub2/grub.cfg"} {
		p := filepath.Join(root, rel)
		data, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("reading the image's /%s: %w", rel, err)
		}
		n := 0
		seen := map[string]bool{}
		out := grubRootArg.ReplaceAllStringFunc(string(data), func(m string) string {
			sm := grubRootArg.FindStringSubmatch(m)
			if !devName.MatchString(sm[2]) {
				return m
			}
			n++
			seen[sm[2]] = true
			return sm[1] + "root=UUID=" + uuid + sm[3]
		})
		if n == 0 {
			continue
		}
		if err := writeKeepingMode(p, []byte(out)); err != nil {
			return nil, fmt.Errorf("rewriting the image's /%s: %w", rel, err)
		}
		for d := range seen {
			changes = append(changes, fmt.Sprintf("/%s: root=%s is now root=UUID=%s in %d kernel command line(s); set GRUB_DISABLE_LINUX_UUID=false in /etc/default/grub so that update-grub keeps it", rel, d, uuid, n))
		}
	}
	return changes, nil
}

// writeKeepingMode replaces the file at p in place (same inode, mode and owner).
func writeKeepingMode(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
