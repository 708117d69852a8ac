//go:build linux

// Package clouddisk makes raw disks shaped like today's official cloud images (Debian 12,
// Ubuntu 24.04): GPT, a BIOS boot partition (14), an EFI system partition (15) and the
// root at partition 1, ext4 labelled cloudimg-rootfs. Tests seed them as EBS-backed AMIs
// of the local EC2 (ec2sim.Server.Seed with SeedImage.EBS) to run on the namespace
// launcher, which mounts partition 1's filesystem; the disks carry no boot loader.
package clouddisk

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Make writes a sparse raw disk of size bytes to img whose root partition (1) is an
// ext4 filesystem labelled cloudimg-rootfs filled from tree (mke2fs -d, no mount). It
// needs sgdisk (Debian package gdisk) and mke2fs (e2fsprogs).
func Make(ctx context.Context, tree, img string, size int64) error {
	if size < 256<<20 {
		return fmt.Errorf("cloud disk %s: size %d is too small (at least 256 MiB: 4 MiB BIOS boot and 106 MiB EFI system partition come first)", img, size)
	}
	f, err := os.OpenFile(img, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cloud disk: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cloud disk %s: %w", img, err)
	}
	run := func(name string, args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("cloud disk %s: %s %s: %v: %s", img, name, strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	// The layout of Debian's and Ubuntu's cloud images.
	if _, err := run("sgdisk", "-n", "14:2048:+4M", "-t", "14:ef02", "-n", "15:0:+106M", "-t", "15:ef00", "-n", "1:0:0", "-t", "1:8300", img); err != nil {
		return err
	}
	info, err := run("sgdisk", "-i", "1", img)
	if err != nil {
		return err
	}
	var first, last int64
	for _, l := range strings.Split(info, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "First" && f[1] == "sector:" {
			first, _ = strconv.ParseInt(f[2], 10, 64)
		}
		if len(f) >= 3 && f[0] == "Last" && f[1] == "sector:" {
			last, _ = strconv.ParseInt(f[2], 10, 64)
		}
	}
	if first == 0 || last <= first {
		return fmt.Errorf("cloud disk %s: sgdisk -i 1 gave no sectors for partition 1 (%d-%d):\n%s", img, first, last, info)
	}
	_, err = run("mke2fs", "-q", "-F", "-t", "ext4", "-L", "cloudimg-rootfs", "-E", fmt.Sprintf("offset=%d", first*512), "-d", tree, img,
		strconv.FormatInt((last-first+1)/2, 10)+"k")
	return err
}
