package localenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

// TestSeedImages builds every seed image kind (cached), checks its partition table and
// filesystems, and boots it in qemu (TCG) the way the local EC2 does: HVM disks
// through SeaBIOS and their own GRUB, the PV image with the kernel, initrd and
// command line its menu.lst names, the EBS cloud image as an NVMe disk. Each boot
// must reach the SSH banner and show the kernel's and systemd's boot lines on the
// serial console. All but one boot also get a metadata service with a key and a
// forward: the test logs in with the key and checks the forward relay unit, the root
// device and sudo; the hvm-gpt boot has no metadata service, to show that sshd starts
// with no cloud-init data.
//
// The hvm-mbr and pv images boot only with INSTANCESTORE_SEED_BOOT=all: in make test
// each of them boots twice in builder/instancestore's TestAcceptanceVMBuilds (as the
// source instance, through cloud-init's key and the forward relay, and as the new
// AMI), and a TCG boot costs minutes of the CI's two cores.
func TestSeedImages(t *testing.T) {
	testroot.Require(t)
	testroot.Short(t, "builds four Debian disk images and boots each in qemu")
	for _, tool := range []string{"qemu-system-x86_64", "debugfs", "blkid", "sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (Debian packages qemu-system-x86, e2fsprogs, util-linux, fdisk): %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()

	start := time.Now()
	if _, err := DebianVMRootTarball(ctx, t.Logf); err != nil {
		t.Fatal(err)
	}
	t.Logf("DebianVMRootTarball: %s (a cold build when the cache had none)", time.Since(start).Round(time.Second))

	uuids := map[string]SeedKind{}
	for _, kind := range SeedKinds {
		t.Run(string(kind), func(t *testing.T) {
			start := time.Now()
			img, err := SeedImage(ctx, kind, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			first := time.Since(start)
			start = time.Now()
			again, err := SeedImage(ctx, kind, t.Logf)
			if err != nil || again != img {
				t.Fatalf("second SeedImage: %q, %v; want %q from the cache", again, err, img)
			}
			t.Logf("SeedImage(%s): %s (a cold build when the cache had none), cached: %s", kind, first.Round(100*time.Millisecond), time.Since(start).Round(time.Millisecond))

			uuid := checkSeedLayout(t, kind, img)
			if other, dup := uuids[uuid]; dup {
				t.Errorf("root filesystem UUID %s is also %s's", uuid, other)
			}
			uuids[uuid] = kind
			if (kind == SeedHVMMBR || kind == SeedPV) && os.Getenv("INSTANCESTORE_SEED_BOOT") != "all" {
				t.Logf("%s: not booted here: TestAcceptanceVMBuilds boots it (INSTANCESTORE_SEED_BOOT=all boots it here too)", kind)
				return
			}
			bootSeed(ctx, t, kind, img, uuid, kind != SeedHVMGPT)
		})
	}
}

// checkSeedLayout checks the image's partition table against layoutOf and its
// filesystems' types and labels, and returns the root filesystem's UUID.
func checkSeedLayout(t *testing.T, kind SeedKind, img string) string {
	t.Helper()
	l, err := layoutOf(kind)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != seedDiskBytes {
		t.Errorf("image is %d bytes, want %d", st.Size(), seedDiskBytes)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > st.Size()/2 {
		t.Errorf("image uses %d bytes of its %d: not sparse", used, st.Size())
	}
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if l.table == "" {
		if err == nil {
			t.Errorf("the PV image has a partition table: %s", out)
		}
	} else {
		if err != nil {
			t.Fatalf("sfdisk --json %s: %v", img, err)
		}
		var pt struct {
			PartitionTable struct {
				Label      string
				Partitions []struct {
					Node        string
					Start, Size int64
					Type        string
					Bootable    bool
				}
			}
		}
		if err := json.Unmarshal(out, &pt); err != nil {
			t.Fatal(err)
		}
		want := map[string]seedPartition{img + fmt.Sprint(l.root.number): l.root}
		types := map[string]string{img + fmt.Sprint(l.root.number): map[string]string{"dos": "83", "gpt": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}[l.table]}
		if p := l.biosBoot; p != nil {
			want[img+fmt.Sprint(p.number)] = *p
			types[img+fmt.Sprint(p.number)] = "21686148-6449-6E6F-744E-656564454649"
		}
		if p := l.esp; p != nil {
			want[img+fmt.Sprint(p.number)] = *p
			types[img+fmt.Sprint(p.number)] = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
		}
		if pt.PartitionTable.Label != l.table || len(pt.PartitionTable.Partitions) != len(want) {
			t.Fatalf("partition table %s", out)
		}
		for _, p := range pt.PartitionTable.Partitions {
			w, ok := want[p.Node]
			if !ok || p.Start != w.start || p.Size != w.size || !strings.EqualFold(p.Type, types[p.Node]) {
				t.Errorf("partition %s: start %d size %d type %s; want start %d size %d type %s", p.Node, p.Start, p.Size, p.Type, w.start, w.size, types[p.Node])
			}
		}
	}
	probe := func(sector int64) map[string]string {
		out, err := exec.Command("blkid", "-p", "-O", fmt.Sprint(sector*sectorSize), "-o", "export", img).Output()
		if err != nil {
			t.Fatalf("blkid -p -O %d %s: %v", sector*sectorSize, img, err)
		}
		m := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				m[k] = v
			}
		}
		return m
	}
	rootfs := probe(l.root.start)
	if rootfs["TYPE"] != "ext4" || rootfs["LABEL"] != SeedRootLabel || rootfs["UUID"] == "" {
		t.Errorf("root filesystem: %v, want ext4 labelled %s with a UUID", rootfs, SeedRootLabel)
	}
	if l.esp != nil {
		if esp := probe(l.esp.start); esp["TYPE"] != "vfat" {
			t.Errorf("EFI system partition: %v, want vfat", esp)
		}
	}
	return rootfs["UUID"]
}

// bootSeed boots img in qemu and waits for the SSH banner; with metadata, it serves a
// metadata service (a key for admin, one forward) and logs in.
func bootSeed(ctx context.Context, t *testing.T, kind SeedKind, img, uuid string, metadata bool) {
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial.log")
	sshPort := freePort(t)
	nic := fmt.Sprintf("user,model=virtio-net-pci,restrict=on,net=169.254.0.0/16,host=169.254.0.2,hostfwd=tcp:127.0.0.1:%d-:22", sshPort)

	var signer ssh.Signer
	var fwdPort int
	const fwdMarker = "instancestore forward relay reached the host"
	if metadata {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if signer, err = ssh.NewSignerFromKey(priv); err != nil {
			t.Fatal(err)
		}
		sshPub, err := ssh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		fwd := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s: Host %s\n", fwdMarker, r.Host)
		}))
		fwdPort = fwd.Addr().(*net.TCPAddr).Port
		imds := serveLoopback(t, vm.NewMetadataServer(&vm.Metadata{
			InstanceID: "i-0123456789abcdef0", ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro",
			Region: "us-east-1", Zone: "us-east-1a", LocalIPv4: "169.254.2.15", LocalHostname: "ip-169-254-2-15.ec2.internal",
			MAC: "52:54:00:12:34:56", ReservationID: "r-0123456789abcdef0", KeyName: "seed-test",
			PublicKey: string(ssh.MarshalAuthorizedKey(sshPub)), RootDeviceName: "/dev/xvda",
			Forwards: []string{fmt.Sprintf("127.0.0.1:%d 169.254.0.50:%d", fwdPort, fwdPort)},
		}))
		// Each guest connection to a guestfwd address runs the relay (this test
		// binary, see localenv/vm/relay.go) to the host server.
		relay := func(ln net.Listener) string {
			return fmt.Sprintf("cmd:env INSTANCESTORE_VM_RELAY=%s %s", ln.Addr(), exe)
		}
		nic += fmt.Sprintf(",guestfwd=tcp:169.254.169.254:80-%s,guestfwd=tcp:169.254.0.50:%d-%s", relay(imds), fwdPort, relay(fwd))
	}

	args := []string{"-accel", "tcg", "-machine", "pc", "-m", "1024", "-smp", "1", "-display", "none",
		"-monitor", "none", "-serial", "file:" + serial, "-no-reboot", "-nic", nic}
	drive := "file=" + img + ",format=raw,snapshot=on"
	switch kind {
	case SeedEBSCloud:
		args = append(args, "-drive", drive+",if=none,id=root", "-device", "nvme,drive=root,serial=vol0123456789abcdef0")
	case SeedPV:
		boot := pvBoot(t, img, dir)
		args = append(args, "-drive", drive+",if=virtio", "-kernel", boot.Kernel, "-initrd", boot.Initrd, "-append", boot.Cmdline)
	default:
		args = append(args, "-drive", drive+",if=virtio")
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	var qemuOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	serialTail := func() string {
		b, _ := os.ReadFile(serial)
		return tailString(string(b), 3000)
	}

	addr := fmt.Sprintf("127.0.0.1:%d", sshPort)
	// TCG on a loaded 2-core machine: boots were seen taking 1 to 6 minutes (the one
	// without a metadata service waits out cloud-init's max_wait of 60 s).
	deadline := time.Now().Add(8 * time.Minute)
	for {
		if banner, ok := sshBanner(addr); ok {
			t.Logf("%s: boot to SSH banner %q: %s", kind, banner, time.Since(start).Round(100*time.Millisecond))
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu exited (%v): %s\nserial console:\n%s", err, qemuOut.String(), serialTail())
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no SSH banner on %s after 8 minutes; serial console:\n%s", addr, serialTail())
		}
	}
	console, err := os.ReadFile(serial)
	if err != nil {
		t.Fatal(err)
	}
	// systemd colours its lines: compare the text without the escape sequences.
	console = regexp.MustCompile("\x1b\\[[0-9;?]*[A-Za-z]").ReplaceAll(console, nil)
	for _, want := range []string{"Linux version ", "Welcome to Debian GNU/Linux 12 (bookworm)!"} {
		if !bytes.Contains(console, []byte(want)) {
			t.Errorf("serial console lacks %q:\n%s", want, tailString(string(console), 3000))
		}
	}
	if !metadata {
		return
	}

	client, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("ssh admin@%s with the metadata service's key: %v\nserial console:\n%s", addr, err, serialTail())
	}
	defer client.Close()
	runGuest := func(command string) string {
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, err := s.CombinedOutput(command)
		if err != nil {
			t.Errorf("guest: %s: %v: %s", command, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// The relay unit ran before sshd started; curl through the guest's own loopback.
	got := runGuest(fmt.Sprintf("curl -sS --max-time 30 http://127.0.0.1:%d/", fwdPort))
	if want := fmt.Sprintf("%s: Host 127.0.0.1:%d", fwdMarker, fwdPort); got != want {
		t.Errorf("guest's curl of its forward: %q, want %q; unit log:\n%s", got, want,
			runGuest("sudo journalctl -b -u instancestore-localenv-forwards.service --no-pager"))
	}
	wantRoot := map[SeedKind]string{SeedHVMMBR: "/dev/vda1", SeedPV: "/dev/vda", SeedEBSCloud: "/dev/nvme0n1p1"}[kind]
	if got := runGuest("findmnt -no SOURCE,LABEL /"); got != wantRoot+" "+SeedRootLabel {
		t.Errorf("guest's root: %q, want %q", got, wantRoot+" "+SeedRootLabel)
	}
	if kind != SeedPV {
		// The kernel came through the image's own GRUB and grub.cfg.
		cmdline := runGuest("cat /proc/cmdline")
		if !strings.Contains(cmdline, "root=UUID="+uuid+" "+seedCmdline) {
			t.Errorf("guest's kernel command line %q, want root=UUID=%s %s", cmdline, uuid, seedCmdline)
		}
	}
	// What templates wait for first: every cloud-init module ran without an error.
	if got := runGuest("cloud-init status --wait"); !strings.HasSuffix(got, "status: done") {
		t.Errorf("cloud-init status --wait: %q, want status: done; its log:\n%s", got, runGuest("grep -E 'WARNING|ERROR' /var/log/cloud-init.log | tail -20"))
	}
	if got := runGuest("sudo -n id -u"); got != "0" {
		t.Errorf("passwordless sudo: %q", got)
	}
	if kind == SeedEBSCloud {
		// Every EC2 platform's disk driver is in the kernel or its initramfs.
		got := runGuest(`k=$(uname -r); for m in xen-blkfront nvme virtio_blk; do if grep -q "/$m.ko" /lib/modules/$k/modules.builtin || lsinitramfs /boot/initrd.img-$k | grep -q "/$m.ko"; then echo "$m ok"; else echo "$m missing"; fi; done`)
		if got != "xen-blkfront ok\nnvme ok\nvirtio_blk ok" {
			t.Errorf("disk drivers for the initramfs:\n%s", got)
		}
	}
}

// pvBoot reads the PV image's menu.lst as PV-GRUB does and copies the kernel and
// initrd it names out of the image into dir (debugfs: no mount).
func pvBoot(t *testing.T, img, dir string) vm.PVBoot {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat /boot/grub/menu.lst", img).Output()
	if err != nil {
		t.Fatalf("debugfs cat /boot/grub/menu.lst: %v", err)
	}
	boot, err := vm.ReadPVGrubConfig(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(boot.Cmdline, "root=LABEL="+SeedRootLabel) || boot.Initrd == "" {
		t.Fatalf("menu.lst boots %+v, want root=LABEL=%s and an initrd", boot, SeedRootLabel)
	}
	t.Logf("menu.lst: kernel %s initrd %s cmdline %q", boot.Kernel, boot.Initrd, boot.Cmdline)
	get := func(p string) string {
		dst := filepath.Join(dir, filepath.Base(p))
		if out, err := exec.Command("debugfs", "-R", fmt.Sprintf("dump %s %s", p, dst), img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs dump %s: %v: %s", p, err, out)
		}
		if st, err := os.Stat(dst); err != nil || st.Size() == 0 {
			t.Fatalf("%s from the image: %v (empty or missing)", p, err)
		}
		return dst
	}
	return vm.PVBoot{Kernel: get(boot.Kernel), Initrd: get(boot.Initrd), Cmdline: boot.Cmdline}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func serveLoopback(t *testing.T, h http.Handler) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln
}

// sshBanner connects to addr and reads the server's identification line. qemu's
// hostfwd accepts before the guest listens, then closes: that is no banner.
func sshBanner(addr string) (string, bool) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-") {
		return "", false
	}
	return strings.TrimSpace(line), true
}
