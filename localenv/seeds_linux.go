//go:build linux

package localenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

// SeedKind names one shape of the local environment's bootable base images.
type SeedKind string

const (
	// SeedHVMMBR is an MBR disk with one ext4 root partition; GRUB 2 (i386-pc) in the
	// MBR and the gap after it.
	SeedHVMMBR SeedKind = "hvm-mbr"
	// SeedHVMGPT is a GPT disk: the root at partition 1, GRUB's core.img in a BIOS
	// boot partition (2, type EF02) before it.
	SeedHVMGPT SeedKind = "hvm-gpt"
	// SeedPV is a bare ext4 filesystem image (no partition table) with the kernel and
	// initrd in /boot and a PV-GRUB /boot/grub/menu.lst naming them.
	SeedPV SeedKind = "pv"
	// SeedEBSCloud is shaped like today's official Debian cloud images, the source of
	// EBS-backed AMIs: GPT, root at partition 1, BIOS boot partition 14, EFI system
	// partition 15 (FAT, empty: the images boot by BIOS), an initramfs with the Xen,
	// NVMe and virtio disk drivers.
	SeedEBSCloud SeedKind = "ebs-cloud"
)

// SeedKinds lists every kind, in a stable order.
var SeedKinds = []SeedKind{SeedHVMMBR, SeedHVMGPT, SeedPV, SeedEBSCloud}

// seedLayoutVersion changes whenever the images' layout or boot setup (this file)
// changes; the root's own version (debianVMRootVersion) is part of every name too.
const seedLayoutVersion = "seed-2"

// SeedRootLabel is the root filesystem's label in every seed image (fstab mounts / by
// it, as Ubuntu's and Debian's cloud images do).
const SeedRootLabel = "cloudimg-rootfs"

const (
	sectorSize    = 512
	seedDiskBytes = 2 << 30 // apparent size of every image; the files are sparse
)

// seedPartition is one partition of a seed disk, in 512-byte sectors.
type seedPartition struct {
	number      int
	start, size int64
	gptType     string // sgdisk type code; "" on MBR disks
}

// seedLayout is the partition table of a kind: "" table is a bare filesystem.
type seedLayout struct {
	table    string // "dos", "gpt" or "" (no partition table)
	root     seedPartition
	biosBoot *seedPartition // GRUB's core.img; nil: the gap after the MBR
	esp      *seedPartition
}

// gptLastUsable is the last sector a GPT partition may use on a seed disk: the
// backup header and its 128 entries take the disk's last 33 sectors.
const gptLastUsable = seedDiskBytes/sectorSize - 34

func layoutOf(kind SeedKind) (seedLayout, error) {
	const total = seedDiskBytes / sectorSize
	switch kind {
	case SeedHVMMBR:
		return seedLayout{table: "dos", root: seedPartition{number: 1, start: 2048, size: total - 2048}}, nil
	case SeedHVMGPT:
		return seedLayout{table: "gpt",
			biosBoot: &seedPartition{number: 2, start: 2048, size: 2048, gptType: "EF02"},
			root:     seedPartition{number: 1, start: 4096, size: gptLastUsable + 1 - 4096, gptType: "8300"},
		}, nil
	case SeedEBSCloud:
		// Debian's official cloud images (debian-12-genericcloud-amd64): BIOS boot
		// 14 at 1 MiB, ESP 15 up to 128 MiB, root 1 after them.
		return seedLayout{table: "gpt",
			biosBoot: &seedPartition{number: 14, start: 2048, size: 6144, gptType: "EF02"},
			esp:      &seedPartition{number: 15, start: 8192, size: 253952, gptType: "EF00"},
			root:     seedPartition{number: 1, start: 262144, size: gptLastUsable + 1 - 262144, gptType: "8300"},
		}, nil
	case SeedPV:
		return seedLayout{root: seedPartition{start: 0, size: total}}, nil
	}
	return seedLayout{}, fmt.Errorf("unknown seed image kind %q (want one of %v)", kind, SeedKinds)
}

// SeedImage returns the path of a cached raw disk image of the given kind, made from
// DebianVMRootTarball (see SeedKind for the shapes) in instance.CacheDir() when
// missing, under an exclusive lock. The file is shared: callers never modify it, they
// boot a copy-on-write overlay of it or copy it. Its root filesystem has a UUID of
// its own (random when built) and the label SeedRootLabel.
func SeedImage(ctx context.Context, kind SeedKind, logf func(string, ...any)) (string, error) {
	layout, err := layoutOf(kind)
	if err != nil {
		return "", err
	}
	tarball, err := DebianVMRootTarball(ctx, logf)
	if err != nil {
		return "", err
	}
	cache := instance.CacheDir()
	image := filepath.Join(cache, fmt.Sprintf("%s-%s-%s.img", debianVMRootVersion, seedLayoutVersion, kind))
	lock, err := os.OpenFile(filepath.Join(cache, ".seeds.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(image); err == nil {
		return image, nil
	}
	if err := seedToolsPresent(layout); err != nil {
		return "", fmt.Errorf("building the %s seed image: %w", kind, err)
	}
	work, err := os.MkdirTemp(cache, "seed-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	if logf != nil {
		logf("localenv: building the %s seed image from %s; cached afterwards", kind, filepath.Base(tarball))
	}
	tmp := filepath.Join(work, "disk.img")
	if err := buildSeed(ctx, kind, layout, tarball, work, tmp); err != nil {
		return "", fmt.Errorf("building the %s seed image: %w", kind, err)
	}
	if err := os.Rename(tmp, image); err != nil {
		return "", err
	}
	return image, nil
}

// seedToolsPresent checks for the host tools a layout needs. GRUB itself comes from
// the root (chroot), matching the modules it loads.
func seedToolsPresent(l seedLayout) error {
	tools := map[string]string{"mke2fs": "e2fsprogs", "tar": "tar"}
	switch l.table {
	case "dos":
		tools["sfdisk"] = "fdisk"
	case "gpt":
		tools["sgdisk"] = "gdisk"
	}
	if l.esp != nil {
		tools["mkfs.vfat"] = "dosfstools"
	}
	for tool, pkg := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing (Debian package %s): %w", tool, pkg, err)
		}
	}
	return nil
}

// buildSeed makes the image out from the root tarball, in work:
//  1. unpack the root, find its kernel and initrd;
//  2. write the boot loader's configuration into /boot (GRUB 2's grub.cfg and
//     modules, or PV-GRUB's menu.lst);
//  3. make the sparse disk file and its partition table;
//  4. make the root filesystem from the tree, in place at its partition's offset
//     (mke2fs -d: no loop device, no mount);
//  5. the EFI system partition, then the BIOS boot code.
func buildSeed(ctx context.Context, kind SeedKind, layout seedLayout, tarball, work, out string) error {
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := run(ctx, "tar", "-C", root, "--numeric-owner", "-xpf", tarball); err != nil {
		return fmt.Errorf("unpacking the root: %w", err)
	}
	kver, err := kernelVersion(root)
	if err != nil {
		return err
	}
	uuid, err := randomUUID()
	if err != nil {
		return err
	}
	if layout.table == "" {
		err = writeMenuLst(root, kver)
	} else {
		err = writeGrubCfg(root, kver, uuid, layout.table)
	}
	if err != nil {
		return err
	}

	f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(seedDiskBytes); err != nil {
		return err
	}
	if err := partition(ctx, out, layout); err != nil {
		return err
	}
	// The filesystem's size is a whole number of 4 KiB blocks of its partition.
	fsKiB := layout.root.size * sectorSize / 4096 * 4
	if err := run(ctx, "mke2fs", "-q", "-F", "-t", "ext4", "-L", SeedRootLabel, "-U", uuid,
		"-E", fmt.Sprintf("offset=%d", layout.root.start*sectorSize), "-d", root,
		out, fmt.Sprintf("%dk", fsKiB)); err != nil {
		return fmt.Errorf("making the root filesystem: %w", err)
	}
	if p := layout.esp; p != nil {
		// mkfs.fat counts 1 KiB blocks; its --offset is in sectors.
		if err := run(ctx, "mkfs.vfat", "-F", "32", "-n", "UEFI", fmt.Sprintf("--offset=%d", p.start), out, fmt.Sprint(p.size/2)); err != nil {
			return fmt.Errorf("making the EFI system partition: %w", err)
		}
	}
	if layout.table != "" {
		if err := installGrubBIOS(ctx, f, root, layout, uuid); err != nil {
			return fmt.Errorf("installing GRUB: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, tailString(strings.TrimSpace(string(out)), 2000))
	}
	return nil
}

// kernelVersion is the version of the one kernel in root/boot that has an initrd.
func kernelVersion(root string) (string, error) {
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	var versions []string
	for _, k := range kernels {
		v := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join(root, "boot", "initrd.img-"+v)); err == nil {
			versions = append(versions, v)
		}
	}
	if len(versions) != 1 {
		return "", fmt.Errorf("the Debian root has %d kernels with an initrd in /boot (%v), want 1: rebuild it (remove %s-*.tar from %s)",
			len(versions), versions, debianVMRootVersion, instance.CacheDir())
	}
	return versions[0], nil
}

func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// seedCmdline is the kernel command line of the HVM images: kernel and systemd
// messages on the serial console (the last console= is /dev/console), which is what
// GetConsoleOutput shows. Debian's /etc/default/grub.d (debianVMSetup) says the same
// for an update-grub in the guest.
// no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can
// miss its ticks and panic ("IO-APIC + timer doesn't work!"), as seen here; cloud
// images for VMs set it for the same reason.
const seedCmdline = "ro console=tty0 console=ttyS0,115200 net.ifnames=0 no_timer_check"

func writeGrubCfg(root, kver, uuid, table string) error {
	partmod := map[string]string{"dos": "part_msdos", "gpt": "part_gpt"}[table]
	cfg := fmt.Sprintf(`# GRUB 2 configuration of a local environment seed image (instancestore-localenv).
# An update-grub in the guest replaces it, with the same console settings
# (/etc/default/grub.d/50-instancestore.cfg).
set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod %s
insmod ext2
search --no-floppy --fs-uuid --set=root %s
menuentry 'Debian GNU/Linux, with Linux %s' {
	linux /boot/vmlinuz-%s root=UUID=%s %s
	initrd /boot/initrd.img-%s
}
`, partmod, uuid, kver, kver, uuid, seedCmdline, kver)
	dir := filepath.Join(root, "boot", "grub")
	if err := os.MkdirAll(filepath.Join(dir, "i386-pc"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "grub.cfg"), []byte(cfg), 0o444); err != nil {
		return err
	}
	// The modules core.img loads from $prefix (normal, linux, serial, ...), as
	// grub-install copies them.
	mods, err := filepath.Glob(filepath.Join(root, "usr", "lib", "grub", "i386-pc", "*"))
	if err != nil {
		return err
	}
	copied := 0
	for _, m := range mods {
		if !strings.HasSuffix(m, ".mod") && !strings.HasSuffix(m, ".lst") {
			continue
		}
		b, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "i386-pc", filepath.Base(m)), b, 0o644); err != nil {
			return err
		}
		copied++
	}
	if copied == 0 {
		return errors.New("the Debian root has no GRUB modules in /usr/lib/grub/i386-pc (package grub-pc-bin)")
	}
	return nil
}

// writeMenuLst writes the PV-GRUB configuration (GRUB legacy syntax, what EC2's
// PV-GRUB kernels read from the image) of the PV image.
func writeMenuLst(root, kver string) error {
	cfg := fmt.Sprintf(`# PV-GRUB configuration of a local environment seed image (instancestore-localenv).
default 0
timeout 0

title Debian GNU/Linux, with Linux %s
root (hd0)
kernel /boot/vmlinuz-%s root=LABEL=%s ro console=hvc0 console=ttyS0 no_timer_check
initrd /boot/initrd.img-%s
`, kver, kver, SeedRootLabel, kver)
	dir := filepath.Join(root, "boot", "grub")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "menu.lst"), []byte(cfg), 0o644)
}

// partition writes the layout's partition table on the disk file.
func partition(ctx context.Context, disk string, l seedLayout) error {
	switch l.table {
	case "":
		return nil
	case "dos":
		script := fmt.Sprintf("label: dos\nstart=%d, size=%d, type=83, bootable\n", l.root.start, l.root.size)
		cmd := exec.CommandContext(ctx, "sfdisk", "--no-reread", "--no-tell-kernel", "-q", disk)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("sfdisk: %v: %s", err, out)
		}
		return nil
	}
	parts := []seedPartition{l.root}
	for _, p := range []*seedPartition{l.biosBoot, l.esp} {
		if p != nil {
			parts = append(parts, *p)
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].start < parts[j].start })
	args := []string{"-o"}
	for _, p := range parts {
		args = append(args, fmt.Sprintf("-n%d:%d:%d", p.number, p.start, p.start+p.size-1), fmt.Sprintf("-t%d:%s", p.number, p.gptType))
	}
	return run(ctx, "sgdisk", append(args, disk)...)
}

// GRUB 2's i386-pc boot sector (boot.img) fields that grub-bios-setup fills in
// (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h), and the blocklist
// at the end of core.img's first sector (diskboot.img).
const (
	bootBPBStart      = 0x03  // a DOS BPB, kept from the disk's sector 0
	bootBPBEnd        = 0x5a  //
	bootKernelSector  = 0x5c  // uint64: LBA of core.img's first sector
	bootDrive         = 0x64  // 0xff: the drive the BIOS booted from
	bootDriveCheck    = 0x66  // a jmp, made two nops for hard disks
	bootPartTable     = 0x1b8 // disk signature and partition table: kept
	blocklistStart    = 0x200 - 12
	coreMaxMBRSectors = 2047 // the gap before the first partition at 1 MiB
)

// installGrubBIOS puts GRUB 2 for BIOS boot on the disk, as grub-install would:
// core.img (the root's own grub-mkimage and modules) in the gap after the MBR
// or in the BIOS boot partition, and boot.img in the MBR's boot code area, pointing
// at it.
//
// Why not grub-install: it finds the disk and partition of /boot through the kernel's
// block devices, and on these hosts `losetup -P` makes no partition device nodes
// (/dev/loopNpM), so grub-install cannot see the partition holding /boot; a loop
// device at the partition's offset is a whole disk to it, which gives core.img a
// wrong prefix. Building core.img ourselves needs neither a device nor a mount: its
// embedded configuration finds the root filesystem by UUID, wherever the disk ends up
// (virtio, NVMe, Xen), and the blocklist grub-bios-setup would write is one contiguous
// run of sectors right after core.img's first one.
func installGrubBIOS(ctx context.Context, disk *os.File, root string, l seedLayout, uuid string) error {
	const moddir = "/usr/lib/grub/i386-pc"
	partmod, partname := "part_msdos", "msdos"
	if l.table == "gpt" {
		partmod, partname = "part_gpt", "gpt"
	}
	// The root's own grub-mkimage (in a chroot), so core.img and the modules it loads
	// from /boot/grub are one GRUB version. The tree is already in the image, so its
	// /tmp is scratch now.
	scratch, err := os.MkdirTemp(filepath.Join(root, "tmp"), "grub-")
	if err != nil {
		return err
	}
	inRoot := "/" + strings.TrimPrefix(scratch, root+"/")
	if err := os.WriteFile(filepath.Join(scratch, "early.cfg"), []byte(fmt.Sprintf("search.fs_uuid %s root\nset prefix=($root)/boot/grub\n", uuid)), 0o644); err != nil {
		return err
	}
	if err := run(ctx, "chroot", root, "grub-mkimage", "-O", "i386-pc", "-d", moddir, "-o", inRoot+"/core.img", "-c", inRoot+"/early.cfg",
		"-p", fmt.Sprintf("(hd0,%s%d)/boot/grub", partname, l.root.number),
		"biosdisk", partmod, "ext2", "search_fs_uuid"); err != nil {
		return err
	}
	core, err := os.ReadFile(filepath.Join(scratch, "core.img"))
	if err != nil {
		return err
	}
	boot, err := os.ReadFile(filepath.Join(root, moddir, "boot.img"))
	if err != nil {
		return err
	}
	if len(boot) != sectorSize || len(core) < 2*sectorSize {
		return fmt.Errorf("unexpected GRUB images: boot.img %d bytes, core.img %d bytes", len(boot), len(core))
	}
	coreSectors := int64((len(core) + sectorSize - 1) / sectorSize)
	coreLBA, room := int64(1), int64(coreMaxMBRSectors)
	if l.biosBoot != nil {
		coreLBA, room = l.biosBoot.start, l.biosBoot.size
	}
	if coreSectors > room {
		return fmt.Errorf("core.img is %d sectors, the room for it %d", coreSectors, room)
	}
	// diskboot.img loads the rest of core.img from this blocklist entry; grub-mkimage
	// set its length, the start is where we put it.
	if n := binary.LittleEndian.Uint16(core[blocklistStart+8:]); int64(n) != coreSectors-1 {
		return fmt.Errorf("core.img's blocklist says %d sectors, want %d", n, coreSectors-1)
	}
	binary.LittleEndian.PutUint64(core[blocklistStart:], uint64(coreLBA+1))
	if _, err := disk.WriteAt(core, coreLBA*sectorSize); err != nil {
		return fmt.Errorf("writing core.img: %w", err)
	}

	mbr := make([]byte, sectorSize)
	if _, err := disk.ReadAt(mbr, 0); err != nil {
		return err
	}
	if !bytes.Equal(mbr[510:], []byte{0x55, 0xaa}) {
		return errors.New("the disk has no partition table in sector 0")
	}
	copy(boot[bootBPBStart:bootBPBEnd], mbr[bootBPBStart:bootBPBEnd])
	binary.LittleEndian.PutUint64(boot[bootKernelSector:], uint64(coreLBA))
	boot[bootDrive] = 0xff
	boot[bootDriveCheck], boot[bootDriveCheck+1] = 0x90, 0x90
	copy(mbr[:bootPartTable], boot[:bootPartTable])
	if _, err := disk.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("writing the boot sector: %w", err)
	}
	return nil
}
