package vm

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

// The guest's side of qemu's user network (-nic user): its subnet, the address qemu
// answers on (the guest's gateway), and the address that carries the forwarded host
// services (Forward) to the guest.
const (
	guestNet        = "169.254.0.0/16"
	guestHost       = "169.254.0.2"
	guestServices   = "169.254.0.50"
	metadataAddress = "169.254.169.254"
	// sshLoopback is where qemu forwards the guest's sshd inside the namespace.
	sshLoopback = "127.0.0.1:22"
)

// VMLauncher runs every instance as a qemu-system-x86_64 guest (KVM when /dev/kvm is
// usable, else TCG: see Accel) that boots its
// AMI's image the way EC2 boots it (see the package documentation). Each guest runs in
// a network namespace of its own (instance.NewNetwork) whose address is the
// instance's private IP: qemu forwards its port 22 to the guest's sshd, so the host
// reaches the guest exactly as it reaches a namespace instance.
type VMLauncher struct {
	// WorkDir holds one directory per instance (the console log, the disk overlay,
	// the instance store disks, the PV kernel, qemu's pid file); it is removed at
	// termination, and Sweep removes what a killed process left.
	WorkDir string
	// Forward lists host loopback services ("127.0.0.1:PORT", e.g. the S3 endpoint)
	// the guest reaches at the same address through its relay unit (Metadata.Forwards).
	Forward []string
	// MemoryMiB is each guest's memory (default 1024).
	MemoryMiB int
	// Logf receives one line per boot step (no secrets); nil discards.
	Logf func(format string, args ...any)
	// Accel is "kvm", "tcg" or "auto"; empty takes $INSTANCESTORE_ACCEL (AccelEnv),
	// and auto when that is unset too: KVM (-cpu host) when /dev/kvm is usable (see
	// probeKVM), else TCG. kvm on a host where KVM is not usable fails every launch
	// with the reason.
	Accel string
	// ProbeKernel is a Linux kernel (bzImage) that the KVM probe boots before KVM is
	// chosen (probeKVM); empty: the probe stops at SeaBIOS, which misses hosts where
	// KVM runs firmware but hangs a kernel.
	ProbeKernel string

	accelOnce sync.Once
	accel     Accel
	accelErr  error
	probe     kvmProbe // nil: probeKVM (tests inject one)

	mu       sync.Mutex
	launched []Launched
}

// Accelerator is the accelerator the launcher's guests run on, decided on first use
// (the probe runs once per launcher) and logged with its reason.
func (l *VMLauncher) Accelerator(ctx context.Context) (Accel, error) {
	l.accelOnce.Do(func() {
		override := l.Accel
		if override == "" {
			override = os.Getenv(AccelEnv)
		}
		probe := l.probe
		if probe == nil {
			probe = func(ctx context.Context) error { return probeKVM(ctx, l.ProbeKernel) }
		}
		l.accel, l.accelErr = chooseAccel(ctx, override, os.Getenv(TCGCPUEnv), probe)
		if l.accelErr == nil && l.Logf != nil {
			l.Logf("localenv: %s", l.accel.Reason)
		}
	})
	return l.accel, l.accelErr
}

// Launched names what one started VM made (for checks that nothing is left behind).
type Launched struct {
	InstanceID, NetNS, Dir string
	PID                    int
}

// Launched lists every VM this launcher started, terminated or not.
func (l *VMLauncher) Launched() []Launched {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Launched(nil), l.launched...)
}

// PIDFileName is qemu's pid file in an instance's directory (Sweep reads it).
const PIDFileName = "qemu.pid"

// ConsoleFileName is the serial console log in an instance's directory.
const ConsoleFileName = "console.log"

// powerdownTimeout is how long a guest with EBS volumes gets to shut down after the
// ACPI power button before it is powered off.
const powerdownTimeout = 90 * time.Second

// bannerTimeout bounds one probe of sshd's banner.
const bannerTimeout = 30 * time.Second

// VM is one running guest.
type VM struct {
	id     string
	dir    string
	net    *instance.Network
	imdsLn net.Listener
	imds   *http.Server
	fw     *instance.Forwarder
	ssh    *instance.Forwarder
	cmd    *exec.Cmd
	qmp    *qmpClient // qemu's QMP monitor on its stdin and stdout
	exited chan struct{}
	// graceful: the guest has EBS volumes, whose data outlives it; Terminate powers it
	// off through ACPI first, as EC2's stop and terminate do.
	graceful bool
	// disks are its EBS volumes by id (hot-plug, hotMu).
	hotMu   sync.Mutex
	disks   map[string]disk
	stderr  *instance.TailBuffer
	stopMu  sync.Mutex
	stopped bool
	stopErr error
}

func (v *VM) logf(l *VMLauncher, format string, args ...any) {
	if l.Logf != nil {
		l.Logf("vm %s: "+format, append([]any{v.id}, args...)...)
	}
}

// PrivateIP is the instance's address: sshd answers on its port 22.
func (v *VM) PrivateIP() string { return v.net.Addr().String() }

// NetNS is the network namespace qemu runs in.
func (v *VM) NetNS() string { return v.net.Name() }

// PID is qemu's process id.
func (v *VM) PID() int { return v.cmd.Process.Pid }

// Dir is the instance's directory.
func (v *VM) Dir() string { return v.dir }

// ConsoleOutput is everything the guest wrote to its serial console (ec2sim.ConsoleReader).
func (v *VM) ConsoleOutput() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(v.dir, ConsoleFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// consoleTail is the last n lines of the console, for error messages.
func (v *VM) consoleTail(n int) string {
	b, _ := v.ConsoleOutput()
	return tailLines(string(b), n)
}

// Launch boots the AMI in a new VM and returns once the guest's sshd answers with its
// banner on PrivateIP():22; when ctx ends first, the VM is terminated and the error
// carries the console's last lines.
func (l *VMLauncher) Launch(ctx context.Context, spec ec2sim.LaunchSpec) (_ ec2sim.Instance, err error) {
	if spec.Root.Image == "" && rootVolume(spec) == nil {
		return nil, fmt.Errorf("the AMI of %s has no image file and the instance no EBS root volume: the VM launcher boots disk images (a root tree runs with the namespace launcher, Machines %q)", spec.InstanceID, "namespace")
	}
	for _, tool := range []string{"qemu-system-x86_64", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("VM instances need %s on the host (Debian packages qemu-system-x86, iproute2): %w", tool, err)
		}
	}
	accel, err := l.Accelerator(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	v := &VM{id: spec.InstanceID, dir: filepath.Join(l.WorkDir, spec.InstanceID), exited: make(chan struct{}), stderr: instance.NewTailBuffer(16 << 10), disks: map[string]disk{}}
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the instance directory: %w", err)
	}
	defer func() {
		if err != nil {
			v.Terminate(context.Background())
		}
	}()
	// StartInstances asks for the address the instance had before it was stopped, as
	// EC2 keeps it; when it was taken meanwhile, any free one.
	addr, _ := netip.ParseAddr(spec.PrivateIP)
	if v.net, err = instance.NewNetwork(ctx, addr); err != nil && addr.IsValid() {
		v.net, err = instance.NewNetwork(ctx, netip.Addr{})
	}
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(v.dir, "netns"), []byte(v.net.Name()+"\n"), 0o600); err != nil {
		return nil, err
	}
	md := l.metadata(spec, v.net.Addr())
	if spec.Metadata.HTTPEndpoint != "disabled" {
		// The metadata service listens on loopback inside the namespace, where the
		// guestfwd relay that qemu starts for each guest connection dials it.
		if v.imdsLn, err = instance.ListenInNetNS(v.net.Name(), "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("the metadata service of %s: %w", spec.InstanceID, err)
		}
		v.imds = &http.Server{Handler: NewMetadataServer(md), ReadHeaderTimeout: 30 * time.Second}
		go v.imds.Serve(v.imdsLn)
	}
	if len(l.Forward) > 0 {
		if v.fw, err = instance.StartForwarder(v.net.Name(), l.Forward); err != nil {
			return nil, err
		}
	}
	args, err := l.qemuArgs(ctx, v, spec, md, accel)
	if err != nil {
		return nil, err
	}
	if err := v.start(args); err != nil {
		return nil, err
	}
	// The host reaches sshd at PrivateIP():22 through a relay to qemu's hostfwd on the
	// namespace's loopback: slirp shows a connection from loopback to the guest as
	// coming from its own address (169.254.0.2), while one from the host's veth
	// address (inside the guest's 169.254.0.0/16) would get the guest's answer lost
	// on an ARP nobody answers.
	if v.ssh, err = instance.StartRelayInNetNS(v.net.Name(), net.JoinHostPort(v.PrivateIP(), "22"), sshLoopback); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.launched = append(l.launched, Launched{InstanceID: v.id, NetNS: v.net.Name(), Dir: v.dir, PID: v.PID()})
	l.mu.Unlock()
	v.logf(l, "qemu %d started in %s (%s, %s, %s)", v.PID(), v.net.Name(), spec.Virtualization, spec.InstanceType, strings.Join(accel.Args, " "))
	if err := v.waitSSH(ctx); err != nil {
		return nil, err
	}
	// From now on its EBS volumes hold a running system's file systems: Terminate
	// shuts it down first (a guest that never came up is just powered off).
	for _, vol := range spec.Volumes {
		v.graceful = v.graceful || !vol.InstanceStore
	}
	v.logf(l, "sshd answers on %s:22 after %s", v.PrivateIP(), time.Since(start).Round(100*time.Millisecond))
	return v, nil
}

// metadata is the instance's metadata service content.
func (l *VMLauncher) metadata(spec ec2sim.LaunchSpec, addr netip.Addr) *Metadata {
	domain := "ec2.internal"
	if spec.Region != "" && spec.Region != "us-east-1" {
		domain = spec.Region + ".compute.internal"
	}
	bdm := map[string]string{}
	if spec.RootDeviceName != "" {
		bdm["ami"] = strings.TrimPrefix(spec.RootDeviceName, "/dev/")
		bdm["root"] = spec.RootDeviceName
	}
	for _, d := range planInstanceStore(spec.InstanceType, spec.BlockDevices) {
		if d.DeviceName != "" {
			bdm[d.VirtualName] = strings.TrimPrefix(d.DeviceName, "/dev/")
		}
	}
	// EBS volumes attached at launch besides the root are ebs1, ebs2, ... as on EC2.
	n := 0
	for _, vol := range spec.Volumes {
		if !vol.Root && !vol.InstanceStore && vol.DeviceName != "" {
			n++
			bdm["ebs"+strconv.Itoa(n)] = strings.TrimPrefix(vol.DeviceName, "/dev/")
		}
	}
	md := &Metadata{
		InstanceID: spec.InstanceID, ImageID: spec.ImageID, InstanceType: spec.InstanceType,
		Region: spec.Region, Zone: spec.Zone, LocalIPv4: addr.String(),
		LocalHostname: "ip-" + strings.ReplaceAll(addr.String(), ".", "-") + "." + domain,
		MAC:           randomMAC(), KernelID: spec.KernelID, RamdiskID: spec.RamdiskID,
		KeyName: spec.KeyName, PublicKey: spec.AuthorizedKey, RootDeviceName: spec.RootDeviceName,
		BlockDevices: bdm, UserData: spec.UserData, HTTPTokens: spec.Metadata.HTTPTokens, HopLimit: spec.Metadata.HopLimit,
	}
	for _, f := range l.Forward {
		_, port, _ := net.SplitHostPort(f)
		md.Forwards = append(md.Forwards, f+" "+net.JoinHostPort(guestServices, port))
	}
	return md
}

// randomMAC is a locally administered unicast address, as EC2's ENI MACs are.
func randomMAC() string {
	b := make([]byte, 6)
	rand.Read(b)
	b[0] = b[0]&0xfc | 0x02
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}

// qemuArgs prepares the disks (and a PV kernel) in the instance directory and returns
// qemu's command line.
func (l *VMLauncher) qemuArgs(ctx context.Context, v *VM, spec ec2sim.LaunchSpec, md *Metadata, accel Accel) ([]string, error) {
	mem := l.MemoryMiB
	if mem == 0 {
		mem = 1024
	}
	args := []string{
		"-name", v.id, "-machine", "pc,graphics=off", "-m", strconv.Itoa(mem), "-smp", "1",
		"-nodefaults", "-display", "none", "-no-reboot", "-boot", "strict=on",
		"-chardev", "file,id=console,path=" + qemuEscape(filepath.Join(v.dir, ConsoleFileName)),
		"-serial", "chardev:console",
		"-qmp", "stdio",
		// PCI hot-plug (AttachVolume) happens on the i440fx root bus through ACPI.
		"-pidfile", filepath.Join(v.dir, PIDFileName),
		"-device", "virtio-rng-pci",
	}
	args = append(args, accel.Args...)
	args = append(args, smbios(spec.InstanceType)...)
	bootImage := spec.Root.Image
	if root := rootVolume(spec); root != nil {
		// An EBS-backed instance: its volumes' files in place (what the guest writes
		// is the volume's data, kept across stop and start), the root first and the
		// boot disk, NVMe on Nitro types (SeaBIOS boots NVMe).
		bootImage = root.Path
		args = append(args, v.volumeArgs(spec)...)
	} else {
		// The root disk: the AMI's image under a private copy-on-write overlay
		// (qemu's temporary qcow2 snapshot, made in the instance directory, see
		// start), so the AMI never changes.
		args = append(args, "-drive", "file="+qemuEscape(spec.Root.Image)+",format=raw,if=none,id=root,snapshot=on,cache=unsafe,discard=unmap",
			"-device", "virtio-blk-pci,drive=root,bootindex=1")
		args = append(args, v.volumeArgs(spec)...)
	}
	switch spec.Virtualization {
	case "paravirtual":
		kernel, initrd, cmdline, err := pvBoot(ctx, bootImage, v.dir)
		if err != nil {
			return nil, err
		}
		args = append(args, "-kernel", kernel, "-append", cmdline)
		if initrd != "" {
			args = append(args, "-initrd", initrd)
		}
	case "hvm", "":
		// SeaBIOS boots the disk's own boot code.
	default:
		return nil, fmt.Errorf("virtualization type %q: want hvm or paravirtual", spec.Virtualization)
	}
	storeVolumes := false
	for _, vol := range spec.Volumes {
		storeVolumes = storeVolumes || vol.InstanceStore
	}
	for i, d := range planInstanceStore(spec.InstanceType, spec.BlockDevices) {
		if d.NVMe && storeVolumes {
			continue // the simulator made the NVMe instance store (spec.Volumes)
		}
		p := filepath.Join(v.dir, d.VirtualName+".img")
		if err := makeStoreDisk(ctx, d, p); err != nil {
			return nil, err
		}
		id := "store" + strconv.Itoa(i)
		args = append(args, "-drive", "file="+qemuEscape(p)+",format=raw,if=none,id="+id+",cache=unsafe,discard=unmap")
		if d.NVMe {
			// As on Nitro: model "Amazon EC2 NVMe Instance Storage" is not settable in
			// qemu 7.2; the serial says what it is.
			args = append(args, "-device", "nvme,drive="+id+",serial=AWS"+strings.ToUpper(randomHex(17)))
		} else {
			args = append(args, "-device", "virtio-blk-pci,drive="+id+",serial="+d.VirtualName)
		}
	}
	nic := []string{"user", "id=net0", "net=" + guestNet, "host=" + guestHost, "restrict=on",
		"hostfwd=tcp:" + sshLoopback + "-:22"}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this program for the guestfwd relay: %w", err)
	}
	relayCmd := func(target string) string {
		// slirp runs it through a shell-like parser: quote the program's path. Only a
		// loopback address is on this command line, never a secret.
		return "cmd:env " + relayEnv + "=" + target + " " + shellQuote(exe)
	}
	if v.imdsLn != nil {
		nic = append(nic, "guestfwd=tcp:"+metadataAddress+":80-"+relayCmd(v.imdsLn.Addr().String()))
	}
	for _, f := range l.Forward {
		_, port, _ := net.SplitHostPort(f)
		nic = append(nic, "guestfwd=tcp:"+guestServices+":"+port+"-"+relayCmd(f))
	}
	for i := range nic {
		nic[i] = qemuEscape(nic[i])
	}
	// The NIC has no option ROM: EC2 never boots from the network (iPXE would try
	// DHCP and TFTP before SeaBIOS gives up on a broken disk).
	args = append(args, "-netdev", strings.Join(nic, ","), "-device", "virtio-net-pci,netdev=net0,romfile=,mac="+md.MAC)
	return args, nil
}

// xenFamilies are the instance families that EC2 runs on Xen (the others on Nitro).
var xenFamilies = map[string]bool{"t1": true, "t2": true, "m1": true, "m2": true, "m3": true, "m4": true,
	"c1": true, "c3": true, "c4": true, "r3": true, "r4": true, "i2": true, "i3": true, "d2": true, "x1": true, "g2": true}

// smbios makes the guest's firmware tables say what EC2's say: a system UUID and
// serial number starting with "ec2" (cloud-init's EC2 datasource identifies AWS by
// them, and only on AWS does it use IMDSv2 session tokens, which HttpTokens=required
// needs), and the hypervisor of the instance type's generation: Xen "HVM domU" with a
// ".amazon" BIOS, or "Amazon EC2" on Nitro.
func smbios(itype string) []string {
	b := make([]byte, 16)
	rand.Read(b)
	h := fmt.Sprintf("%x", b)
	uuid := "ec2" + h[3:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	fam, _, _ := strings.Cut(itype, ".")
	bios, vendor, product := "type=0,vendor=Amazon EC2,version=1.0", "Amazon EC2", itype
	if xenFamilies[fam] {
		bios, vendor, product = "type=0,vendor=Xen,version=4.11.amazon", "Xen", "HVM domU"
	}
	return []string{"-smbios", bios, "-smbios", "type=1,manufacturer=" + qemuEscape(vendor) + ",product=" + qemuEscape(product) +
		",uuid=" + uuid + ",serial=" + uuid}
}

// makeStoreDisk makes a sparse raw disk file of the volume's size, formatted as EC2
// formats it (or left empty).
func makeStoreDisk(ctx context.Context, d storeDisk, p string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("creating instance store disk: %w", err)
	}
	if err := f.Truncate(d.SizeBytes); err != nil {
		f.Close()
		return fmt.Errorf("sizing instance store disk %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if d.Format == "" {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "mke2fs", d.mkfsArgs(p)...).CombinedOutput(); err != nil {
		return fmt.Errorf("formatting instance store disk %s %s (mke2fs, Debian package e2fsprogs): %v: %s", d.VirtualName, d.Format, err, out)
	}
	return nil
}

// start runs qemu inside the instance's network namespace. qemu dies with this
// process (Pdeathsig) and gets only PATH and TMPDIR (its snapshot overlay goes to the
// instance directory): nothing of this process's environment reaches it or its
// relays.
func (v *VM) start(args []string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, out, err := os.Pipe()
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", v.net.Name(), "qemu-system-x86_64"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + v.dir}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, out, v.stderr
	cmd.Dir = v.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	r.Close()
	out.Close()
	if err != nil {
		w.Close()
		outR.Close()
		return fmt.Errorf("starting qemu: %w", err)
	}
	v.cmd, v.qmp = cmd, newQMP(w, outR)
	go func() {
		cmd.Wait()
		close(v.exited)
	}()
	return nil
}

// waitSSH waits for sshd's banner on PrivateIP():22.
func (v *VM) waitSSH(ctx context.Context) error {
	addr := net.JoinHostPort(v.PrivateIP(), "22")
	var lastErr error
	for {
		select {
		case <-v.exited:
			return fmt.Errorf("qemu exited before the guest's sshd answered (%v): %s\nlast console lines:\n%s", v.cmd.ProcessState, strings.TrimSpace(v.stderr.String()), v.consoleTail(30))
		case <-ctx.Done():
			return fmt.Errorf("the guest's sshd did not answer on %s: %v (last probe: %v)\nlast console lines:\n%s", addr, ctx.Err(), lastErr, v.consoleTail(30))
		default:
		}
		if lastErr = probeBanner(ctx, addr); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-v.exited:
		case <-time.After(time.Second):
		}
	}
}

func probeBanner(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl := time.Now().Add(bannerTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.SetDeadline(dl)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// Terminate powers the guest off (QMP quit; SIGKILL when qemu does not exit within
// 10 seconds; a guest with EBS volumes first gets an ACPI power-off and up to
// powerdownTimeout to shut down cleanly, as EC2's stop and terminate give it), closes its metadata service and forwarders, removes its network
// namespace and its directory (overlay, instance store disks, console log). It is
// idempotent.
func (v *VM) Terminate(ctx context.Context) error {
	v.stopMu.Lock()
	defer v.stopMu.Unlock()
	if v.stopped {
		return v.stopErr
	}
	v.stopped = true
	var errs []error
	if v.cmd != nil {
		select {
		case <-v.exited:
		default:
			v.qmp.Send("qmp_capabilities")
			if v.graceful {
				v.qmp.Send("system_powerdown")
				t := time.NewTimer(powerdownTimeout)
				select {
				case <-v.exited:
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
			}
			v.qmp.Send("quit")
			select {
			case <-v.exited:
			case <-time.After(10 * time.Second):
				v.cmd.Process.Kill()
				select {
				case <-v.exited:
				case <-time.After(30 * time.Second):
					errs = append(errs, fmt.Errorf("qemu %d of %s does not exit", v.cmd.Process.Pid, v.id))
				}
			}
		}
		v.qmp.Close()
	}
	if v.ssh != nil {
		if err := v.ssh.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if v.imds != nil {
		v.imds.Close()
	}
	if v.fw != nil {
		if err := v.fw.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if v.net != nil {
		if err := v.net.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(v.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing the instance directory: %w", err))
	}
	v.stopErr = errors.Join(errs...)
	return v.stopErr
}

// qemuEscape doubles commas, qemu's option separator.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// shellQuote quotes s for a POSIX shell (and GLib's shell-like parser).
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return fmt.Sprintf("%x", b)[:n]
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(s, "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
