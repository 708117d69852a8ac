package volume

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"golang.org/x/sys/unix"
)

// bootModules are the modules a Debian kernel needs to mount an ext4 root on virtio,
// in load order.
var bootModules = []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
	"virtio_pci", "virtio_blk", "crc16", "mbcache", "jbd2", "crc32c_generic", "ext4"}

func cacheDir(t testing.TB) string {
	d := os.Getenv("INSTANCESTORE_CACHE")
	if d == "" {
		d = "/var/cache/instancestore-test"
	}
	must(t, os.MkdirAll(d, 0o755))
	return d
}

var kernelOnce sync.Once
var kernelDir, kernelErr = "", error(nil)

// debianKernel returns the unpacked tree of the Debian kernel package that
// linux-image-amd64 currently depends on, downloaded once with apt-get and cached.
func debianKernel(t testing.TB) (vmlinuz, modules string) {
	kernelOnce.Do(func() {
		out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
		m := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-amd64)`).FindSubmatch(out)
		if err != nil || m == nil {
			kernelErr = fmt.Errorf("apt-cache depends linux-image-amd64 names no kernel package (run apt-get update): %v %s", err, out)
			return
		}
		pkg := string(m[1])
		// Other test processes may fetch the same kernel at the same time.
		if lock, err := os.OpenFile(filepath.Join(cacheDir(t), "kernel.lock"), os.O_CREATE|os.O_RDWR, 0o644); err == nil {
			defer lock.Close()
			unix.Flock(int(lock.Fd()), unix.LOCK_EX)
		}
		dir := filepath.Join(cacheDir(t), pkg)
		if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
			kernelDir = dir
			return
		}
		debs := filepath.Join(cacheDir(t), "debs")
		os.MkdirAll(debs, 0o755)
		matches, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb"))
		if len(matches) == 0 {
			cmd := exec.Command("apt-get", "download", pkg)
			cmd.Dir = debs
			if out, err := cmd.CombinedOutput(); err != nil {
				kernelErr = fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
				return
			}
			matches, _ = filepath.Glob(filepath.Join(debs, pkg+"_*.deb"))
		}
		if len(matches) == 0 {
			kernelErr = fmt.Errorf("apt-get download %s left no .deb in %s", pkg, debs)
			return
		}
		os.RemoveAll(dir)
		if out, err := exec.Command("dpkg", "-x", matches[0], dir).CombinedOutput(); err != nil {
			kernelErr = fmt.Errorf("dpkg -x %s: %v\n%s", matches[0], err, out)
			return
		}
		os.WriteFile(filepath.Join(dir, "done"), nil, 0o644)
		kernelDir = dir
	})
	if kernelErr != nil {
		t.Fatal(kernelErr)
	}
	vm, _ := filepath.Glob(filepath.Join(kernelDir, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(kernelDir, "lib", "modules", "*"))
	if len(vm) != 1 || len(mods) != 1 {
		t.Fatalf("kernel package in %s has no single vmlinuz and module tree", kernelDir)
	}
	return vm[0], mods[0]
}

// cpioWriter writes a newc ("070701") archive, the format the kernel unpacks as
// initramfs.
type cpioWriter struct {
	buf bytes.Buffer
	ino int
}

func (c *cpioWriter) add(name string, mode uint32, data []byte, rdevMajor, rdevMinor int) {
	c.ino++
	fmt.Fprintf(&c.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.buf.WriteString(name + "\x00")
	c.pad()
	c.buf.Write(data)
	c.pad()
}

func (c *cpioWriter) pad() {
	for c.buf.Len()%4 != 0 {
		c.buf.WriteByte(0)
	}
}

// buildBootinit compiles testdata/bootinit as a static binary.
func buildBootinit(t testing.TB) []byte {
	out := filepath.Join(t.TempDir(), "bootinit")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/bootinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building bootinit: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	must(t, err)
	return b
}

// makeInitrd builds the gzip'd initrd: bootinit as /init and the boot modules.
func makeInitrd(t testing.TB, initBin []byte, modules string) string {
	paths := map[string]string{}
	filepath.WalkDir(filepath.Join(modules, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			paths[strings.TrimSuffix(d.Name(), ".ko")] = p
		}
		return nil
	})
	var c cpioWriter
	for _, d := range []string{"dev", "proc", "sys", "newroot", "mods"} {
		c.add(d, 0o040755, nil, 0, 0)
	}
	c.add("dev/console", 0o020600, nil, 5, 1)
	c.add("init", 0o100755, initBin, 0, 0)
	for _, m := range bootModules {
		p, ok := paths[m]
		if !ok {
			t.Fatalf("module %s.ko not in %s", m, modules)
		}
		b, err := os.ReadFile(p)
		must(t, err)
		c.add("mods/"+m+".ko", 0o100644, b, 0, 0)
	}
	c.add("mods/order", 0o100644, []byte(strings.Join(bootModules, "\n")), 0, 0)
	c.add("TRAILER!!!", 0, nil, 0, 0)
	out := filepath.Join(t.TempDir(), "initrd.gz")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(c.buf.Bytes())
	zw.Close()
	must(t, os.WriteFile(out, gz.Bytes(), 0o644))
	return out
}

// bootImage boots img under qemu (TCG) and returns the marker line its init printed.
func bootImage(t testing.TB, img, vmlinuz, initrd, root string) string {
	return runQemu(t, "-kernel", vmlinuz, "-initrd", initrd,
		"-append", "root="+root+" init=/sbin/init-test console=ttyS0 panic=-1 quiet no_timer_check",
		"-drive", "file="+img+",format=raw,if=virtio")
}

// runQemu runs qemu (TCG) with args and returns the marker line printed on the serial
// console, failing after a generous timeout.
func runQemu(t testing.TB, args ...string) string {
	logFile := filepath.Join(t.TempDir(), "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", append([]string{"-accel", "tcg", "-m", "512", "-smp", "1",
		"-no-reboot", "-display", "none", "-monitor", "none", "-nic", "none",
		"-serial", "file:" + logFile}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	marker := regexp.MustCompile(`INSTANCESTORE-BOOT-OK[^\r\n]*`)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(logFile)
			if m := marker.Find(b); m != nil {
				return string(m)
			}
			t.Fatalf("qemu exited without the marker: %s\nserial:\n%s", stderr.String(), b)
		case <-time.After(500 * time.Millisecond):
			b, _ := os.ReadFile(logFile)
			if m := marker.Find(b); m != nil {
				cancel()
				<-done
				return string(m)
			}
			if ctx.Err() != nil {
				<-done
				t.Fatalf("no boot marker within 180 s; serial:\n%s", b)
			}
		}
	}
}

// TestBootImage boots a plain filesystem image made by Build (a paravirtual-style
// image: the kernel comes from outside) with a Debian kernel, after a trip through the
// bundle format (bundle.Write, bundle.Unbundle): the image's own /sbin/init-test must
// run from the image's root. Partitioned images boot through GRUB in TestGRUBBoot.
func TestBootImage(t *testing.T) {
	testroot.Require(t)
	testroot.Short(t, "boots qemu")
	vmlinuz, modules := debianKernel(t)
	initBin := buildBootinit(t)
	initrd := makeInitrd(t, initBin, modules)
	populate := func(dir, host string) {
		writeFile(t, filepath.Join(dir, "sbin/init-test"), initBin, 0o755)
		writeFile(t, filepath.Join(dir, "etc/hostname"), []byte(host+"\n"), 0o644)
		for _, d := range []string{"proc", "dev"} {
			must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
		}
	}
	t.Run("plain", func(t *testing.T) {
		src := newTestFS(t, filepath.Join(t.TempDir(), "fs"), 0, 64<<20, "mkfs.ext4", "-q", "-L", "bootplain")
		populate(src.Dir, "plain-image")
		img, err := Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: t.TempDir()}})
		must(t, err)
		defer img.Remove()
		got := bootImage(t, bundleRoundTrip(t, img), vmlinuz, initrd, "/dev/vda")
		if !strings.Contains(got, "root=/dev/vda ext4 host=plain-image") {
			t.Errorf("marker %q, want the image's root on /dev/vda", got)
		}
	})
}
