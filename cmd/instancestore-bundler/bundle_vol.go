package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
)

func init() {
	register(command{
		name:    "bundle-vol",
		summary: "image the running system's root volume and bundle it (ec2-bundle-vol)",
		run:     runBundleVol,
	})
}

// boolOpt defines a boolean long option on f (flags.go has string options only).
func boolOpt(f *flagSet, p *bool, long, usage string) {
	f.fs.BoolVar(p, long, *p, usage)
	f.options = append(f.options, option{long: long, usage: usage})
}

// splitList reads ec2-ami-tools' comma-separated path lists; the flag may repeat.
type pathList []string

func (l *pathList) String() string { return strings.Join(*l, ",") }
func (l *pathList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func listOpt(f *flagSet, l *pathList, short, long, usage string) {
	for _, n := range []string{short, long} {
		f.fs.Var(l, n, usage)
	}
	f.options = append(f.options, option{short, long, "PATH,...", usage})
}

func runBundleVol(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("bundle-vol", "-u ACCOUNT_ID [-p PREFIX] [-d DESTDIR] [--volume DIR] [--size MiB] [flags]",
		"Images a mounted filesystem of the running system (the root by default) and bundles\n"+
			"it like ec2-bundle-vol: PREFIX.part.N and PREFIX.manifest.xml in DESTDIR. The image\n"+
			"has the source's filesystem type, label, UUID and features; everything on that\n"+
			"filesystem is copied with hard links, holes, owners, modes, times, xattrs and ACLs,\n"+
			"including dot-files under /. Other mounts, /proc /sys /run, /mnt and /media\n"+
			"contents, the scratch directory and the bundler's own files are left out; mount-point\n"+
			"directories keep the mode, owner and times of the volume's own directory beneath\n"+
			"the mount. /dev gets what the volume holds beneath the devtmpfs mount, plus null,\n"+
			"zero, tty and console where those are missing. A write error on the image (a full\n"+
			"or failing --scratch) fails the run: no parts, no manifest. When the\n"+
			"volume is a partition of an MBR or GPT disk, the image is a disk with the same table,\n"+
			"boot code and boot gap (an HVM image). Runs as root.")
	var (
		vol, size, partition, scratch, bundlerDir string
		excludes, includes                        pathList
		filter, noFilter                          bool
	)
	vol, partition = "/", volume.PartitionAuto
	f.stringVar(&vol, "", "volume", "DIR", "mount point of the filesystem to image (default /)")
	f.stringVar(&size, "s", "size", "MiB", "image size in MiB, at most 10240 (default: the size of the source filesystem,\nplus the partition table when partitioned)")
	listOpt(f, &excludes, "e", "exclude", "paths left out of the image (comma-separated, may repeat)")
	listOpt(f, &includes, "i", "include", "paths copied even if excluded, filtered or under /mnt (comma-separated)")
	boolOpt(f, &filter, "filter", "leave out files matching ec2-bundle-vol's sensitive-file patterns (*.pem, *id_rsa*,\n*.gpg, .ssh/authorized_keys, ...); off by default because it removes TLS and apt keys")
	boolOpt(f, &noFilter, "no-filter", "accepted for ec2-bundle-vol compatibility: filtering is off unless --filter")
	f.stringVar(&partition, "P", "partition", "TYPE", "auto, none, mbr or gpt (default auto: keep the table of the disk the volume is on)")
	f.stringVar(&scratch, "", "scratch", "DIR", "where the sparse image is built, in a work directory of its own that is removed\nat the end (default: the instance-store mount /mnt or /media/ephemeral0 if it has\nroom, else /tmp). Created if missing; what was created is removed again at the end.\nNeeds room for the image's data: a full scratch fails the run")
	f.stringVar(&bundlerDir, "", "bundler-dir", "DIR", "the bundler's working directory (keys, uploaded binary): never copied")
	var bf BundleFlags
	bf.Register(f)
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	if filter && noFilter {
		return usagef("--filter and --no-filter both given: use one")
	}
	var sizeBytes int64
	if size != "" {
		mib, err := strconv.ParseInt(size, 10, 64)
		if err != nil || mib <= 0 {
			return usagef("-s, --size %q: give the image size in MiB, e.g. 8192", size)
		}
		if mib<<20 > bundle.MaxImageSize {
			return usagef("-s, --size %d MiB: EC2 boots instance store-backed AMIs of at most 10240 MiB (10 GiB)", mib)
		}
		sizeBytes = mib << 20
	}
	switch partition {
	case volume.PartitionAuto, volume.PartitionNone, volume.PartitionMBR, volume.PartitionGPT:
	default:
		return usagef("-P, --partition %q: use auto, none, mbr or gpt", partition)
	}
	if _, err := bf.level(); err != nil {
		return err
	}
	if bf.Prefix == "" {
		bf.Prefix = "image"
	}
	if err := bundle.CheckBaseName("-p, --prefix", bf.Prefix); err != nil {
		return usagef("%v", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("bundle-vol must run as root: it reads every file and sets up loop devices and mounts")
	}
	// Keys and certificates first: a mistake there should not cost an imaging run.
	setup, err := bf.Resolve(stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	own := []string{bundlerDir}
	if exe, err := os.Executable(); err == nil {
		own = append(own, exe)
	}
	if scratch == "" {
		scratch = volume.DefaultScratch(usedSpace(vol))
	}
	img, err := volume.Build(ctx, volume.Config{
		PlanConfig: volume.PlanConfig{
			Volume: vol, Excludes: excludes, Includes: includes, Filter: filter,
			Scratch: scratch, Own: own,
		},
		Size:      sizeBytes,
		Partition: partition,
		ImageName: bf.Prefix,
		Log:       stderr,
	})
	if errors.Is(err, volume.ErrImageWrite) {
		err = fmt.Errorf("%w; choose it with --scratch", err)
	}
	if err != nil {
		return interrupted(ctx, err)
	}
	// The scratch image goes whatever happens next.
	defer img.Remove()
	bi, err := bundle.OpenImage(img.Path)
	if err != nil {
		return err
	}
	defer bi.Close()
	if _, err := writeBundle(ctx, bi, setup, stdout); err != nil {
		return interrupted(ctx, err)
	}
	if img.Layout != nil {
		fmt.Fprintf(stdout, "layout     %s disk, root partition %d at sector %d: register as hvm\n", img.Layout.Table, img.Layout.RootIndex+1, img.Layout.RootStart)
	}
	return nil
}

// interrupted says so when err comes from SIGINT/SIGTERM.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; scratch image, loop device and mounts removed: %w", err)
	}
	return err
}

// usedSpace estimates the bytes the image needs in scratch: the volume's used space.
func usedSpace(dir string) int64 {
	var s syscall.Statfs_t
	if syscall.Statfs(dir, &s) != nil {
		return 0
	}
	return int64(s.Blocks-s.Bfree) * int64(s.Bsize)
}
