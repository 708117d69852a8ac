package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// Config describes one imaging run.
type Config struct {
	PlanConfig
	// Size of the image file in bytes (the whole disk when partitioned); 0 means the
	// size of the source filesystem (plus the partition table's overhead).
	Size int64
	// Partition is auto, none, mbr or gpt ("" is auto): auto keeps the source disk's
	// table when the volume is a partition of a partitioned disk.
	Partition string
	// ImageName is the image file's name in the work directory (default "image").
	ImageName string
	// Log receives progress and the exclusion summary; nil discards them.
	Log io.Writer
	// Warn receives non-fatal problems; nil prints them to Log.
	Warn func(msg string)
	// AfterCopy, when set, runs on the image's mounted root after the copy and before
	// the unmount (the agent removes Packer's temporary SSH key there).
	AfterCopy func(root string) error
	// XenBoot checks the image for what would stop it booting on the Xen HVM types
	// that run instance store-backed AMIs (legacy BIOS, /dev/xvd* disks): a UEFI-only
	// disk and a kernel without Xen front-ends are refused; a root named by its device
	// in /etc/fstab or grub.cfg is renamed by UUID in the image (Image.Changes).
	XenBoot bool
	// KernelRelease is the kernel whose configuration and initramfs XenBoot checks;
	// "" is the running kernel's (uname -r).
	KernelRelease string
	// RequireScratchRoom fails the build before imaging (ErrScratchFull) when the
	// scratch directory has less free space than the image's data, instead of warning.
	RequireScratchRoom bool

	// sourceDisk replaces sysfs discovery of the disk that holds the volume (tests,
	// where loop devices have no partition nodes).
	sourceDisk *SourceDisk
	sysfs      string
}

// Image is a finished image file in its own work directory under the scratch
// directory. Remove deletes both.
type Image struct {
	Path     string
	Size     int64
	FS       *FSInfo
	Layout   *DiskLayout // nil for a plain filesystem image
	FSOffset int64       // byte offset of the filesystem in the image
	Stats    CopyStats
	Plan     *Plan
	// Changes are what XenBoot changed in the image (never on the source), one line
	// each.
	Changes []string
	workDir string
	scratch string
	created string // the topmost directory of scratch that Build created, or ""
}

// Remove deletes the image and its work directory, and the scratch directories
// Build created (only those, and only when empty).
func (img *Image) Remove() error {
	if img == nil || img.workDir == "" {
		return nil
	}
	err := os.RemoveAll(img.workDir)
	removeCreated(img.scratch, img.created)
	img.created = ""
	return err
}

// mkdirAllCreated creates dir and its missing parents (mode 0700) and returns the
// topmost directory it created ("" when dir existed).
func mkdirAllCreated(dir string) (string, error) {
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		top = d
		if d == filepath.Dir(d) {
			break
		}
	}
	if top == "" {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		removeCreated(dir, top)
		return "", err
	}
	return top, nil
}

// removeCreated removes dir and its parents up to top, stopping at the first that is
// not empty (something else was put there meanwhile).
func removeCreated(dir, top string) {
	if top == "" {
		return
	}
	for d := dir; ; d = filepath.Dir(d) {
		if os.Remove(d) != nil || d == top || d == filepath.Dir(d) {
			return
		}
	}
}

// cleanups runs undo actions in reverse order; Build defers it so that every exit path
// (errors, a cancelled context after SIGINT/SIGTERM) unmounts, detaches and deletes.
type cleanups []func() error

func (c *cleanups) add(f func() error) { *c = append(*c, f) }

func (c *cleanups) run() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		if err := (*c)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*c = nil
	return errors.Join(errs...)
}

// Build images the volume described by cfg into a sparse file in a new work directory
// under cfg.Scratch. On error, and when ctx is cancelled, everything it made is undone.
func Build(ctx context.Context, cfg Config) (img *Image, err error) {
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	warn := cfg.Warn
	if warn == nil {
		warn = func(m string) { fmt.Fprintln(log, "warning:", m) }
	}
	if cfg.ImageName == "" {
		cfg.ImageName = "image"
	}
	if cfg.sysfs == "" {
		cfg.sysfs = "/sys"
	}
	switch cfg.Partition {
	case "":
		cfg.Partition = PartitionAuto
	case PartitionAuto, PartitionNone, PartitionMBR, PartitionGPT:
	default:
		return nil, fmt.Errorf("partition layout %q: use auto, none, mbr or gpt", cfg.Partition)
	}
	if cfg.Scratch == "" {
		return nil, errors.New("no scratch directory given (see DefaultScratch)")
	}
	scratch, err := filepath.Abs(cfg.Scratch)
	if err != nil {
		return nil, err
	}
	cfg.PlanConfig.Scratch = scratch

	var undo cleanups
	defer func() {
		if cerr := undo.run(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
		}
		if err != nil && img != nil {
			if rerr := img.Remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("the work directory %s could not be removed (%w): remove it once the scratch filesystem is repaired", img.workDir, rerr))
			}
			img = nil
		}
	}()

	if _, err := NewPlan(cfg.PlanConfig); err != nil { // option errors before any work
		return nil, err
	}
	created, err := mkdirAllCreated(scratch)
	if err != nil {
		return nil, fmt.Errorf("scratch directory %s: creating it: %w", scratch, err)
	}
	if created != "" {
		fmt.Fprintf(log, "created scratch directory %s (removed again at the end)\n", scratch)
	}
	workDir, err := os.MkdirTemp(scratch, "instancestore-bundle-")
	if err != nil {
		removeCreated(scratch, created)
		return nil, fmt.Errorf("scratch directory %s: %w", scratch, err)
	}
	img = &Image{workDir: workDir, Path: filepath.Join(workDir, cfg.ImageName), scratch: scratch, created: created}
	// The work directory holds the image being written: never copy it, even when the
	// scratch directory is the volume's root.
	cfg.Own = append(append([]string(nil), cfg.Own...), workDir)
	plan, err := NewPlan(cfg.PlanConfig)
	if err != nil {
		return img, err
	}
	img.Plan = plan
	if cfg.XenBoot {
		if err := checkBootOnRoot(plan); err != nil {
			return img, err
		}
	}

	srcDev, err := devNode(cfg.sysfs, plan.Source.Major, plan.Source.Minor, workDir)
	if err != nil {
		return img, err
	}
	fs, err := ReadFSInfo(srcDev)
	if err != nil {
		return img, fmt.Errorf("volume %s: %w", plan.Volume, err)
	}
	isExt := func(t string) bool { return t == "ext2" || t == "ext3" || t == "ext4" }
	switch t := plan.Source.FSType; {
	case isExt(t) && isExt(fs.Type):
		// The superblock's features are what count; the mounted name is what the
		// system's fstab and kernel use, so mkfs takes it for its defaults.
		fs.Type = t
	case t != fs.Type:
		return img, fmt.Errorf("volume %s is mounted as %s but its superblock says %s", plan.Volume, t, fs.Type)
	}
	if len(fs.ExtDropped) > 0 {
		warn(fmt.Sprintf("source filesystem features not reproduced (state or unsupported by mke2fs): %v", fs.ExtDropped))
	}
	img.FS = fs

	layout, err := chooseLayout(cfg, plan, workDir)
	if err != nil {
		return img, err
	}
	img.Layout = layout
	if layout != nil && cfg.XenBoot {
		if err := layout.CheckLegacyBIOS(); err != nil {
			return img, err
		}
	}
	if layout != nil {
		if n, ok := layout.KeptESP(); ok {
			fmt.Fprintf(log, "keeping the EFI system partition (partition %d) in the image\n", n)
		}
		for _, d := range layout.Dropped {
			warn("not copied into the disk image: source " + d)
		}
		if layout.freshTable {
			warn("a new " + layout.Table + " table has no boot loader: the image boots only with a kernel EC2 supplies (AKI/PV-GRUB) unless you install one")
		}
	}

	// Sizes: the filesystem keeps the source's block multiple; the disk image is the
	// partition start + filesystem + GPT backup, rounded up to a MiB when defaulted.
	offset, overhead := int64(0), int64(0)
	if layout != nil {
		offset, overhead = layout.RootStart*sectorSize, layout.Overhead()
	}
	// What the copy writes: the volume's used space less what the exclusions and the
	// emptied directories leave out.
	used, left := usedBytes(plan.Volume), plan.leftOutBytes()
	need := max(used-left, 0)
	total := cfg.Size
	fsDefault := fs.Size
	if total == 0 {
		total = roundUp(offset+fs.Size+overhead, 1<<20)
		if total > bundle.MaxImageSize {
			// A volume larger than EC2 allows (an EBS root of 20 GiB, ...): the image
			// is as big as the files need, with headroom.
			fsDefault = roundUp(need+max(need/4, 512<<20), 1<<20) / int64(fs.BlockSize) * int64(fs.BlockSize)
			total = roundUp(offset+fsDefault+overhead, 1<<20)
			if total <= bundle.MaxImageSize {
				fmt.Fprintf(log, "the volume's %d MiB are more than an instance store-backed AMI can have: the image is %d MiB, for the %d MiB of files and room to spare\n", fs.Size>>20, total>>20, need>>20)
			}
		}
	}
	if total > bundle.MaxImageSize {
		return img, fmt.Errorf("the image would be %d MiB: EC2 boots instance-store AMIs of at most %d MiB (10 GiB); give an image size of at most %d MiB with enough room for the %.0f MiB in use",
			total>>20, bundle.MaxImageSize>>20, bundle.MaxImageSize>>20, float64(usedBytes(plan.Volume))/(1<<20))
	}
	fsSize := (total - offset - overhead) / int64(fs.BlockSize) * int64(fs.BlockSize)
	if cfg.Size == 0 {
		fsSize = fsDefault // the rounding slack stays outside the partition
	}
	if fsSize < 16<<20 {
		return img, fmt.Errorf("an image size of %d MiB leaves %d MiB for the filesystem: too small", total>>20, fsSize>>20)
	}
	if need > fsSize {
		warn(fmt.Sprintf("the volume uses %d MiB (%d MiB after exclusions) but the image filesystem has %d MiB: the copy will fail; give a larger image size or exclude more", used>>20, need>>20, fsSize>>20))
	}
	var sfs unix.Statfs_t
	if unix.Statfs(scratch, &sfs) == nil {
		if free := int64(sfs.Bavail) * int64(sfs.Bsize); free < need {
			msg := fmt.Sprintf("scratch directory %s has %d MiB free but the image will hold %d MiB (%d MiB used on the volume, %d MiB excluded)", scratch, free>>20, need>>20, used>>20, left>>20)
			if cfg.RequireScratchRoom {
				return img, fmt.Errorf("%w: %s: use a scratch directory with more room (an instance-store volume, or an EBS volume mounted there)", ErrScratchFull, msg)
			}
			warn(msg + ": the image will not fit and bundling will fail; use a scratch directory with more room (an instance-store volume)")
		}
	}
	img.Size, img.FSOffset = total, offset
	fmt.Fprintf(log, "imaging %s (%s, label %q, UUID %s) into %s: %d MiB", plan.Volume, fs.Type, fs.Label, fs.UUIDString(), img.Path, total>>20)
	if layout != nil {
		fmt.Fprintf(log, ", %s partition %d at sector %d", layout.Table, layout.RootIndex+1, layout.RootStart)
	}
	fmt.Fprintln(log)

	f, err := os.OpenFile(img.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return img, fmt.Errorf("creating the image: %w", err)
	}
	if err := f.Truncate(total); err != nil {
		f.Close()
		return img, fmt.Errorf("creating the image %s: %w", img.Path, err)
	}
	if layout != nil {
		if err := layout.WriteTable(f, total/sectorSize, fsSize/sectorSize); err != nil {
			f.Close()
			return img, err
		}
	}
	// f stays open until the end: its fsync reports the writeback errors of the
	// loop device's writes into the file, which nothing else would.
	undo.add(func() error { f.Close(); return nil })

	loop, err := AttachLoop(img.Path, offset, fsSize)
	if err != nil {
		return img, err
	}
	undo.add(loop.Detach)
	guard := &imageGuard{file: f, loop: loop.Path, dev: loop.f, fsType: fs.Type, fsOff: offset, scratch: scratch}
	cmd, err := MkfsCommand(ctx, fs, loop.Path, fsSize)
	if err != nil {
		return img, err
	}
	if err := runMkfs(cmd); err != nil {
		return img, fmt.Errorf("making the image filesystem: %w", err)
	}
	mnt := filepath.Join(workDir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return img, err
	}
	if err := mountFS(loop.Path, mnt, fs.Type, false); err != nil {
		return img, err
	}
	undo.add(func() error { return unmount(mnt) })
	guard.mnt = mnt

	// A bind mount of the volume shows what lies beneath the mounts on it: the mount
	// points' own metadata and what the volume holds in /dev.
	under := filepath.Join(workDir, "volume")
	if err := os.Mkdir(under, 0o700); err != nil {
		return img, err
	}
	if err := unix.Mount(plan.Volume, under, "", unix.MS_BIND, ""); err != nil {
		// Seen in containers that forbid mounts: the copy still works, with less.
		warn(fmt.Sprintf("cannot bind-mount the volume %s (%v): mount points get the metadata of what is mounted on them, and /dev only the standard nodes", plan.Volume, err))
		under = ""
	} else {
		undo.add(func() error { return unmount(under) })
		if err := unix.Mount("", under, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return img, fmt.Errorf("making the bind mount %s read-only: %w", under, err)
		}
	}

	start := time.Now()
	c := &Copier{Plan: plan, Dst: mnt, Warn: warn, Progress: log, Under: under}
	if err := c.Run(ctx); err != nil {
		// A copy error that comes from lost writes (EIO, a read-only image) is
		// explained by the image's state.
		if gerr := guard.checkMounted(); gerr != nil && ctx.Err() == nil {
			return img, fmt.Errorf("%w (the copy stopped at: %v)", gerr, err)
		}
		return img, err
	}
	img.Stats = c.Stats()
	if cfg.AfterCopy != nil {
		if err := cfg.AfterCopy(mnt); err != nil {
			return img, err
		}
	}
	if cfg.XenBoot {
		rel := cfg.KernelRelease
		if rel == "" {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return img, fmt.Errorf("uname: %w", err)
			}
			rel = unix.ByteSliceToString(u.Release[:])
		}
		ifs, err := ReadFSInfo(loop.Path)
		if err != nil {
			return img, fmt.Errorf("the image filesystem: %w", err)
		}
		changes, err := xenBoot(mnt, ifs.UUIDString(), rel, warn)
		if err != nil {
			return img, err
		}
		for _, c := range changes {
			fmt.Fprintf(log, "changed in the image (not on this instance): %s\n", c)
		}
		img.Changes = changes
	}
	if err := guard.checkMounted(); err != nil {
		return img, err
	}
	// Unmount and detach now (not only in the deferred cleanup) so that their errors,
	// e.g. a failed journal flush, fail the build; then the image file itself.
	if err := unmount(mnt); err != nil {
		return img, err
	}
	if err := loop.Detach(); err != nil {
		return img, err
	}
	if err := guard.checkDetached(); err != nil {
		return img, err
	}
	if err := undo.run(); err != nil {
		return img, err
	}
	fmt.Fprintf(log, "copied in %s\n", time.Since(start).Round(time.Millisecond))
	plan.WriteSummary(log)
	return img, nil
}

func chooseLayout(cfg Config, plan *Plan, workDir string) (*DiskLayout, error) {
	if cfg.Partition == PartitionNone {
		return nil, nil
	}
	disk := cfg.sourceDisk
	if disk == nil {
		var err error
		disk, err = findSourceDisk(cfg.sysfs, plan.Source.Major, plan.Source.Minor, workDir)
		if err != nil {
			return nil, err
		}
	}
	if disk == nil {
		if cfg.Partition == PartitionAuto {
			return nil, nil
		}
		return FreshLayout(cfg.Partition), nil
	}
	l, err := ReadLayout(disk)
	if err != nil {
		if cfg.Partition == PartitionAuto {
			return nil, err
		}
		return FreshLayout(cfg.Partition), nil
	}
	if cfg.Partition != PartitionAuto && cfg.Partition != l.Table {
		return FreshLayout(cfg.Partition), nil
	}
	return l, nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// usedBytes is the space in use on the filesystem mounted at dir.
func usedBytes(dir string) int64 {
	var s unix.Statfs_t
	if unix.Statfs(dir, &s) != nil {
		return 0
	}
	return int64(s.Blocks-s.Bfree) * int64(s.Bsize)
}

// DefaultScratch picks where the image is built: an instance-store (ephemeral) mount
// with room for need bytes, else /tmp.
func DefaultScratch(need int64) string {
	mounts, _ := ReadMounts()
	for _, dir := range []string{"/mnt", "/media/ephemeral0", "/mnt/ephemeral0", "/media/ephemeral1"} {
		if _, err := MountAt(mounts, dir); err != nil {
			continue
		}
		var s unix.Statfs_t
		if unix.Statfs(dir, &s) == nil && int64(s.Bavail)*int64(s.Bsize) > need && unix.Access(dir, unix.W_OK) == nil {
			return dir
		}
	}
	return os.TempDir()
}
