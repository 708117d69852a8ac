package volume

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

const grubDir = "/usr/lib/grub/i386-pc"

// installGRUB installs GRUB 2 for BIOS on the disk file: boot.img in sector 0 and
// core.img embedded after the table (the MBR gap, or the BIOS boot partition of a
// GPT disk), the way grub-install does. core.img carries its config: load the kernel
// and initrd from the root filesystem (mounted at fsDir from loop device fsDev) and
// boot. grub-bios-setup finds the root through the device map, so the loop device of
// the partition stands in for it.
func installGRUB(t *testing.T, disk, fsDir, fsDev, grubRoot, cmdline string) {
	dir := filepath.Join(fsDir, "boot/grub")
	must(t, os.MkdirAll(dir, 0o755))
	cfg := filepath.Join(t.TempDir(), "early.cfg")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf("set root=%s\nlinux /boot/vmlinuz %s\ninitrd /boot/initrd.gz\nboot\n", grubRoot, cmdline)), 0o644))
	run(t, "grub-mkimage", "-O", "i386-pc", "-d", grubDir, "-o", filepath.Join(dir, "core.img"), "-c", cfg,
		"-p", grubRoot+"/boot/grub", "biosdisk", "part_msdos", "part_gpt", "ext2", "linux", "boot")
	b, err := os.ReadFile(filepath.Join(grubDir, "boot.img"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "boot.img"), b, 0o644))
	devmap := filepath.Join(t.TempDir(), "device.map")
	must(t, os.WriteFile(devmap, []byte(fmt.Sprintf("(hd0) %s\n(hd1) %s\n", disk, fsDev)), 0o644))
	run(t, filepath.Join(grubDir, "grub-bios-setup"), "-d", dir, "-m", devmap, "-s", disk)
}

// TestGRUBBoot is the HVM case end to end: a disk with GRUB 2 installed (boot code in
// sector 0, core.img in the MBR gap or the GPT BIOS boot partition) and the kernel in
// the root filesystem's /boot. bundle-vol's image, through bundle and unbundle, must
// boot from the BIOS through GRUB to the image's own init.
func TestGRUBBoot(t *testing.T) {
	testroot.Require(t)
	testroot.Short(t, "boots qemu through GRUB twice")
	if _, err := os.Stat(filepath.Join(grubDir, "grub-bios-setup")); err != nil && os.Getenv("INSTANCESTORE_CI") == "" {
		t.Skip("grub-pc-bin not installed")
	}
	vmlinuz, modules := debianKernel(t)
	initBin := buildBootinit(t)
	initrd := makeInitrd(t, initBin, modules)
	for _, c := range []struct {
		name, table, grubRoot string
		part                  int
		start                 int64
	}{
		{"mbr", "label: dos\nstart=2048, size=131072, type=83, bootable\n", "(hd0,msdos1)", 1, 2048},
		{"gpt", "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\nstart=4096, size=131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n", "(hd0,gpt2)", 2, 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // two single-threaded TCG guests use both cores
			disk := filepath.Join(t.TempDir(), "disk")
			must(t, os.WriteFile(disk, nil, 0o600))
			must(t, os.Truncate(disk, 96<<20))
			if out, err := runStdin(strings.NewReader(c.table), "sfdisk", "-q", disk); err != nil {
				t.Fatalf("sfdisk: %v %s", err, out)
			}
			src := newTestFS(t, disk, c.start*512, 64<<20, "mkfs.ext4", "-q", "-L", "grub"+c.name)
			writeFile(t, filepath.Join(src.Dir, "sbin/init-test"), initBin, 0o755)
			writeFile(t, filepath.Join(src.Dir, "etc/hostname"), []byte("grub-"+c.name+"\n"), 0o644)
			for _, d := range []string{"proc", "dev"} {
				must(t, os.MkdirAll(filepath.Join(src.Dir, d), 0o755))
			}
			for from, to := range map[string]string{vmlinuz: "boot/vmlinuz", initrd: "boot/initrd.gz"} {
				b, err := os.ReadFile(from)
				must(t, err)
				writeFile(t, filepath.Join(src.Dir, to), b, 0o644)
			}
			root := fmt.Sprintf("/dev/vda%d", c.part)
			installGRUB(t, disk, src.Dir, src.Dev, c.grubRoot, "root="+root+" init=/sbin/init-test console=ttyS0 panic=-1 quiet no_timer_check")
			exec.Command("sync").Run()

			img, err := Build(context.Background(), Config{
				PlanConfig: PlanConfig{Volume: src.Dir, Scratch: t.TempDir()},
				sourceDisk: &SourceDisk{Path: disk, PartNumber: c.part, Start: c.start},
			})
			must(t, err)
			defer img.Remove()
			got := runQemu(t, "-drive", "file="+bundleRoundTrip(t, img)+",format=raw,if=virtio", "-boot", "c")
			if want := "root=" + root + " ext4 host=grub-" + c.name; !strings.Contains(got, want) {
				t.Errorf("marker %q, want %q", got, want)
			}
		})
	}
}
