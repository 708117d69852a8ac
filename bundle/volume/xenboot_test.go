package volume

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

const testRel = "6.1.0-99-cloud-amd64"

// newc writes a newc cpio archive of the given names (regular files, the name as data).
func newc(names ...string) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	for i, n := range append(names, "TRAILER!!!") {
		data := []byte(n)
		if n == "TRAILER!!!" {
			data = nil
		}
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", i+1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n)+1, 0)
		b.WriteString(n)
		b.WriteByte(0)
		pad()
		b.Write(data)
		pad()
	}
	return b.Bytes()
}

// initramfs is an early uncompressed microcode archive followed by a main archive
// compressed with the given tool (gzip, zstd, xz), as update-initramfs and dracut make.
func initramfs(t *testing.T, compress string, names ...string) []byte {
	t.Helper()
	early := newc("kernel/x86/microcode/GenuineIntel.bin")
	early = append(early, make([]byte, 512-len(early)%512)...)
	main := newc(names...)
	var z []byte
	if compress == "gzip" {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write(main)
		must(t, w.Close())
		z = b.Bytes()
	} else {
		cmd := exec.Command(compress, "-c")
		cmd.Stdin = bytes.NewReader(main)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", compress, err)
		}
		z = out
	}
	return append(early, z...)
}

func TestCheckXenFrontends(t *testing.T) {
	both := "CONFIG_XEN_BLKDEV_FRONTEND=m\nCONFIG_XEN_NETDEV_FRONTEND=m\n"
	mod := "usr/lib/modules/" + testRel + "/kernel/drivers/block/xen-blkfront.ko.xz"
	for _, tc := range []struct {
		name, config string
		initrd       []byte
		initrdName   string
		want, warn   string
	}{
		{name: "built in", config: "CONFIG_XEN_BLKDEV_FRONTEND=y\nCONFIG_XEN_NETDEV_FRONTEND=y\n"},
		{name: "modules, gzip initramfs", config: both, initrd: initramfs(t, "gzip", "init", mod), initrdName: "initrd.img-" + testRel},
		{name: "modules, zstd initramfs", config: both, initrd: initramfs(t, "zstd", "init", mod), initrdName: "initrd.img-" + testRel},
		{name: "modules, xz dracut initramfs", config: both, initrd: initramfs(t, "xz", "init", strings.TrimSuffix(mod, ".xz")), initrdName: "initramfs-" + testRel + ".img"},
		{name: "no config", warn: "cannot check the kernel for Xen drivers: /boot/config-" + testRel + " is not in the image; the image boots on the instance store types (Xen) only if its kernel has xen-blkfront and xen-netfront"},
		{name: "no front-ends", config: "# CONFIG_XEN_BLKDEV_FRONTEND is not set\nCONFIG_XEN_NETDEV_FRONTEND=m\n",
			want: "the kernel " + testRel + " has no Xen front-end drivers (CONFIG_XEN_BLKDEV_FRONTEND not set in /boot/config-" + testRel + "): the instance types that run instance store-backed AMIs are Xen HVM and need xen-blkfront for the disk and xen-netfront for the network; install a kernel that has them (Debian's linux-image-amd64 or linux-image-cloud-amd64, Ubuntu's linux-aws) and reboot into it before bundling"},
		{name: "module not in the initramfs", config: both, initrd: initramfs(t, "zstd", "init", "usr/lib/modules/"+testRel+"/kernel/drivers/nvme/host/nvme.ko"), initrdName: "initrd.img-" + testRel,
			want: "the initramfs /boot/initrd.img-" + testRel + " has no xen-blkfront module: the root disk cannot be found on the Xen instance types that run instance store-backed AMIs; add it (echo xen-blkfront >> /etc/initramfs-tools/modules && update-initramfs -u -k " + testRel + ", or dracut --add-drivers xen-blkfront -f) in a provisioner before bundling"},
		{name: "no initramfs", config: both,
			want: "the kernel " + testRel + " has xen-blkfront as a module but no initramfs was found in /boot (initrd.img-" + testRel + " or initramfs-" + testRel + ".img): without it the root disk cannot be found on the Xen instance types; build one that includes xen-blkfront (update-initramfs -u -k " + testRel + ", or dracut --add-drivers xen-blkfront)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.config != "" {
				writeFile(t, filepath.Join(root, "boot", "config-"+testRel), []byte(tc.config), 0o644)
			}
			if tc.initrd != nil {
				writeFile(t, filepath.Join(root, "boot", tc.initrdName), tc.initrd, 0o644)
			}
			var warns []string
			err := checkXenFrontends(root, testRel, func(m string) { warns = append(warns, m) })
			if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && got != tc.want {
				t.Errorf("error\n%v\nwant\n%s", err, tc.want)
			}
			if tc.warn != "" && (len(warns) != 1 || warns[0] != tc.warn) || tc.warn == "" && len(warns) != 0 {
				t.Errorf("warnings %q, want %q", warns, tc.warn)
			}
		})
	}
}

// cloudDisk makes a source disk laid out like today's official cloud images (BIOS boot
// partition 14, EFI system partition 15 before the root, root partition 1) with a root
// that names itself by NVMe device names, and images it with the Xen checks on.
func cloudDisk(t *testing.T, table string, rootStart, espStart, espSectors int64) (disk string, src *testFS, img *Image, log string, warns []string, err error) {
	testroot.Require(t)
	disk = filepath.Join(t.TempDir(), "disk.img")
	must(t, os.WriteFile(disk, nil, 0o600))
	must(t, os.Truncate(disk, 160<<20))
	run(t, "sgdisk", append(strings.Fields(table), disk)...)
	if espSectors > 0 {
		l, err := AttachLoop(disk, espStart*512, espSectors*512)
		must(t, err)
		run(t, "mkfs.vfat", "-n", "ESP", l.Path)
		must(t, l.Detach())
	}
	src = newTestFS(t, disk, rootStart*512, 100<<20, "mkfs.ext4", "-q", "-L", "cloudimg-rootfs")
	writeFile(t, filepath.Join(src.Dir, "etc/fstab"), []byte("# /etc/fstab\n/dev/nvme0n1p1\t/\text4\tdefaults,discard\t0 1\n/dev/nvme0n1p15 /boot/efi vfat defaults 0 2\n/dev/nvme1n1 /data ext4 defaults,nofail 0 2\n"), 0o644)
	writeFile(t, filepath.Join(src.Dir, "boot/grub/grub.cfg"), []byte("menuentry 'Debian' {\n\tlinux /boot/vmlinuz-"+testRel+" root=/dev/nvme0n1p1 ro console=ttyS0\n}\nmenuentry 'rescue' {\n\tlinux /boot/vmlinuz-"+testRel+" root=/dev/nvme0n1p1 ro single\n}\n"), 0o644)
	writeFile(t, filepath.Join(src.Dir, "boot/config-"+testRel), []byte("CONFIG_XEN_BLKDEV_FRONTEND=m\nCONFIG_XEN_NETDEV_FRONTEND=y\n"), 0o644)
	writeFile(t, filepath.Join(src.Dir, "boot/initrd.img-"+testRel), initramfs(t, "zstd", "init", "usr/lib/modules/"+testRel+"/kernel/drivers/block/xen-blkfront.ko"), 0o644)
	var lb bytes.Buffer
	img, err = Build(context.Background(), Config{
		PlanConfig:    PlanConfig{Volume: src.Dir, Scratch: t.TempDir()},
		Log:           &lb,
		Warn:          func(m string) { warns = append(warns, m) },
		XenBoot:       true,
		KernelRelease: testRel,
		sourceDisk:    &SourceDisk{Path: disk, PartNumber: 1, Start: rootStart},
	})
	if img != nil {
		t.Cleanup(func() { img.Remove() })
	}
	return disk, src, img, lb.String(), warns, err
}

// TestBuildCloudImageForXen: the ESP is kept with the BIOS boot partition; the root's
// device names in fstab and grub.cfg become its UUID in the image, not on the source.
func TestBuildCloudImageForXen(t *testing.T) {
	table := "-n 14:2048:8191 -t 14:EF02 -n 15:8192:18431 -t 15:EF00 -c 15:UEFI -n 1:18432:+100M -t 1:8300"
	disk, src, img, log, warns, err := cloudDisk(t, table, 18432, 8192, 10240)
	t.Logf("log:\n%s", log)
	must(t, err)
	if !bytes.Equal(readAt(t, img.Path, 8192*512, 10240*512), readAt(t, disk, 8192*512, 10240*512)) {
		t.Errorf("the EFI system partition's bytes are not those of the source")
	}
	got, want := sfdiskJSON(t, img.Path), sfdiskJSON(t, disk)
	if len(got.PartitionTable.Partitions) != 3 {
		t.Fatalf("image partitions %+v, want root, BIOS boot and ESP", got.PartitionTable.Partitions)
	}
	for i, p := range got.PartitionTable.Partitions {
		s := want.PartitionTable.Partitions[i]
		if p.Start != s.Start || p.Size != s.Size || p.Type != s.Type || p.UUID != s.UUID {
			t.Errorf("partition %s: image %+v, source %+v", p.Node, p, s)
		}
	}
	if out := run(t, "sgdisk", "-v", img.Path); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v on the image:\n%s", out)
	}
	if !strings.Contains(log, "keeping the EFI system partition (partition 15) in the image") {
		t.Errorf("log does not say the ESP is kept:\n%s", log)
	}
	for _, w := range warns {
		if strings.Contains(w, "partition 15") {
			t.Errorf("the ESP is warned about as dropped: %q", w)
		}
	}
	uuid := img.FS.UUIDString()
	wantChanges := []string{
		"/etc/fstab: the root /dev/nvme0n1p1 is now UUID=" + uuid + " (device names differ on the Xen instance types)",
		"/boot/grub/grub.cfg: root=/dev/nvme0n1p1 is now root=UUID=" + uuid + " in 2 kernel command line(s); set GRUB_DISABLE_LINUX_UUID=false in /etc/default/grub so that update-grub keeps it",
	}
	if strings.Join(img.Changes, "\n") != strings.Join(wantChanges, "\n") {
		t.Errorf("changes\n%q\nwant\n%q", img.Changes, wantChanges)
	}
	wantWarn := "/etc/fstab mounts /dev/nvme0n1p15 on /boot/efi by device name: on the Xen instance types the disks are /dev/xvd*, so that mount may fail at boot; name it by UUID= or LABEL=, or add nofail"
	if len(warns) != 1 || warns[0] != wantWarn {
		t.Errorf("warnings %q, want %q", warns, wantWarn)
	}
	mnt := mountImage(t, img)
	fstab, _ := os.ReadFile(filepath.Join(mnt, "etc/fstab"))
	if want := "# /etc/fstab\nUUID=" + uuid + "\t/\text4\tdefaults,discard\t0 1\n/dev/nvme0n1p15 /boot/efi vfat defaults 0 2\n/dev/nvme1n1 /data ext4 defaults,nofail 0 2\n"; string(fstab) != want {
		t.Errorf("image fstab\n%s\nwant\n%s", fstab, want)
	}
	grub, _ := os.ReadFile(filepath.Join(mnt, "boot/grub/grub.cfg"))
	if strings.Contains(string(grub), "/dev/nvme") || strings.Count(string(grub), "root=UUID="+uuid+" ro") != 2 {
		t.Errorf("image grub.cfg:\n%s", grub)
	}
	// The running source is untouched.
	if b, _ := os.ReadFile(filepath.Join(src.Dir, "etc/fstab")); !strings.Contains(string(b), "/dev/nvme0n1p1\t/") {
		t.Errorf("the source fstab was changed:\n%s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(src.Dir, "boot/grub/grub.cfg")); !strings.Contains(string(b), "root=/dev/nvme0n1p1") {
		t.Errorf("the source grub.cfg was changed:\n%s", b)
	}
}

// TestBuildRefusesUEFIOnly: a GPT disk with an ESP and no BIOS boot partition is
// refused before anything is copied.
func TestBuildRefusesUEFIOnly(t *testing.T) {
	table := "-n 15:2048:18431 -t 15:EF00 -n 1:18432:+100M -t 1:8300"
	disk, _, _, _, _, err := cloudDisk(t, table, 18432, 0, 0)
	want := "the disk " + disk + " boots with UEFI only (a GPT disk with an EFI system partition and no BIOS boot partition): the instance types that run instance store-backed AMIs boot legacy BIOS; start from a source whose disk has a BIOS boot partition with GRUB for i386-pc (official Debian, Ubuntu and Amazon Linux cloud images do), or add one and run grub-install --target=i386-pc on the source first"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n%v\nwant\n%s", err, want)
	}
}

// TestBuildLargeVolumeDefaultsToNeed: a volume over EC2's 10 GiB limit (a 20 GiB EBS
// root) is imaged by default at what its files need, with headroom.
func TestBuildLargeVolumeDefaultsToNeed(t *testing.T) {
	testroot.Require(t)
	src := newTestFS(t, filepath.Join(t.TempDir(), "big.fs"), 0, 10400<<20, "mkfs.ext4", "-q")
	writeFile(t, filepath.Join(src.Dir, "etc/data"), bytes.Repeat([]byte("x"), 8<<20), 0o644)
	var lb bytes.Buffer
	img, err := Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: t.TempDir()}, Log: &lb})
	must(t, err)
	defer img.Remove()
	need := usedBytes(src.Dir)
	if img.Size > need+need/4+(512<<20)+(1<<20) || img.Size < 512<<20 {
		t.Errorf("image %d MiB for %d MiB used", img.Size>>20, need>>20)
	}
	if !strings.Contains(lb.String(), "more than an instance store-backed AMI can have: the image is") {
		t.Errorf("log does not explain the size:\n%s", lb.String())
	}
}
