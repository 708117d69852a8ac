package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// AccelEnv overrides the accelerator choice: "kvm" (an error when /dev/kvm is not
// usable), "tcg", or empty/"auto" (KVM when usable, else TCG).
const AccelEnv = "INSTANCESTORE_ACCEL"

// TCGCPUEnv overrides the CPU model qemu emulates under TCG (tcgCPU), e.g. qemu64;
// for benchmarks.
const TCGCPUEnv = "INSTANCESTORE_TCG_CPU"

// tcgCPU is the CPU model under TCG: "max", every feature TCG emulates (SSE4.2,
// AES-NI, PCLMULQDQ, AVX2, SHA-NI, ...), rather than qemu's default qemu64 (SSE2
// only). Go in the guest (the agent) then takes its assembly AES, SHA-1 and CRC paths,
// one TCG helper call per instruction, instead of running table-driven software
// crypto instruction by instruction. Measured 2026-12-02 on the shared 2-core host
// (load 11-19) with qemu-user 7.2, the same TCG and CPU models, on instancestore-
// bundler bundle-image of a 512 MiB ext4 image holding 196 MiB of files (Python 3.11's
// library, Perl's, /usr/share/doc), the agent's bundle step: qemu64 27.8 and 29.0 s
// of CPU, max 25.2 and 25.0 s (about 12% less; native: 3.2 s). The CPU times, not the
// walls (147-189 s), compare: the neighbours set the walls. Boot to SSH of the hvm-gpt
// seed with max: bench/vm-boot.sh (bench/README.md); the kernel boots with it (no
// panic; no_timer_check is on every seed's command line).
const tcgCPU = "max"

// Accel is the accelerator a VMLauncher runs its guests on.
type Accel struct {
	// Name is "kvm" or "tcg".
	Name string
	// Args are qemu's -accel and -cpu options.
	Args []string
	// Reason says why (logged once per launcher).
	Reason string
}

// kvmProbe reports why KVM is not usable (nil: it is).
type kvmProbe func(ctx context.Context) error

// chooseAccel picks the accelerator from the override (AccelEnv's value) and the
// probe: KVM with the host's CPU when usable, else TCG with tcgCPU (or cpu, when
// set). Asking for kvm when the probe fails is an error that says why.
func chooseAccel(ctx context.Context, override, cpu string, probe kvmProbe) (Accel, error) {
	if cpu == "" {
		cpu = tcgCPU
	}
	tcg := func(reason string) Accel {
		return Accel{Name: "tcg", Args: []string{"-accel", "tcg", "-cpu", cpu}, Reason: reason}
	}
	kvm := Accel{Name: "kvm", Args: []string{"-accel", "kvm", "-cpu", "host"}}
	switch strings.ToLower(strings.TrimSpace(override)) {
	case "tcg":
		return tcg(fmt.Sprintf("%s=tcg; using TCG (-cpu %s)", AccelEnv, cpu)), nil
	case "kvm":
		if err := probe(ctx); err != nil {
			return Accel{}, fmt.Errorf("%s=kvm, but KVM is not usable here: %w; unset %s (or set it to tcg) to run the guests under TCG", AccelEnv, err, AccelEnv)
		}
		kvm.Reason = fmt.Sprintf("%s=kvm; /dev/kvm works: using KVM (-cpu host)", AccelEnv)
		return kvm, nil
	case "", "auto":
		if err := probe(ctx); err != nil {
			return tcg(fmt.Sprintf("%v; using TCG (-cpu %s)", err, cpu)), nil
		}
		kvm.Reason = "/dev/kvm works: using KVM (-cpu host)"
		return kvm, nil
	}
	return Accel{}, fmt.Errorf("%s=%q: want kvm, tcg or auto", AccelEnv, override)
}

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
	kvmCreateVM      = 0xAE01 // _IO(KVMIO, 0x01)
	kvmAPIVersion    = 12
)

// probeKVM says whether qemu can run guests under KVM here: /dev/kvm opens read-write,
// speaks API version 12 and creates a VM, and then qemu with -accel kvm -cpu host
// runs SeaBIOS to its boot menu (a disk-less machine, a few seconds at most) and,
// when kernel names a Linux kernel, boots that kernel to its root-mount panic. The
// later steps catch hosts whose /dev/kvm answers every ioctl but cannot run a guest:
// nested virtualization that rejects MSRs qemu sets, hangs in SeaBIOS's option ROMs,
// or (seen on a 2-core CI machine, 2026-12-02) runs SeaBIOS and a kernel's real-mode
// setup and then spins at 100% CPU once the kernel leaves real mode, printing
// nothing. Choosing KVM there would leave every guest hung.
func probeKVM(ctx context.Context, kernel string) error {
	if err := probeKVMDevice("/dev/kvm"); err != nil {
		return err
	}
	if err := probeQEMUKVM(ctx); err != nil {
		return err
	}
	if kernel == "" {
		return nil
	}
	// One kernel run per process and kernel: a test binary starts many launchers,
	// and on a host where KVM hangs each run costs the whole timeout.
	linuxProbes.Lock()
	defer linuxProbes.Unlock()
	if err, ok := linuxProbes.done[kernel]; ok {
		return err
	}
	err := probeQEMUKVMLinux(ctx, kernel)
	if ctx.Err() == nil {
		linuxProbes.done[kernel] = err
	}
	return err
}

var linuxProbes = struct {
	sync.Mutex
	done map[string]error
}{done: map[string]error{}}

// kernelProbeDone are console lines a kernel without a root device prints once it
// has run its whole boot in long mode, up to mounting the root.
var kernelProbeDone = [][]byte{[]byte("VFS: Unable to mount root"), []byte("Kernel panic")}

// qemuKVMLinuxProbeTimeout bounds the kernel run: under KVM a kernel reaches its root
// mount in a second or two; under a broken KVM it never does.
const qemuKVMLinuxProbeTimeout = 20 * time.Second

// probeQEMUKVMLinux boots kernel (a bzImage, no initrd, no disk) under qemu -accel kvm
// -cpu host with panic=-1 and -no-reboot, so that it exits when the kernel panics
// for want of a root filesystem; the serial console must show that panic.
func probeQEMUKVMLinux(ctx context.Context, kernel string) error {
	r := runQEMUProbe(ctx, qemuKVMLinuxProbeTimeout, kernelProbeDone, func(log string) []string {
		return []string{"-m", "256", "-serial", "file:" + qemuEscape(log),
			"-kernel", kernel, "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"}
	})
	console := "its console stayed empty"
	if l := lastLine(r.log); l != "" {
		console = fmt.Sprintf("its console stopped after %q", l)
	}
	switch {
	case r.err == nil:
		return nil
	case r.hung:
		return fmt.Errorf("/dev/kvm opens, but Linux (%s) under qemu -accel kvm -cpu host hangs: %s within %s", filepath.Base(kernel), console, qemuKVMLinuxProbeTimeout)
	case r.exited:
		return fmt.Errorf("/dev/kvm opens, but Linux (%s) under qemu -accel kvm -cpu host fails (%v; %s): %s", filepath.Base(kernel), r.err, console, errorLine(r.stderr))
	}
	return r.err
}

// probeKVMDevice checks the KVM device node at path: open O_RDWR, KVM_GET_API_VERSION,
// KVM_CREATE_VM.
func probeKVMDevice(path string) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", path, describeErrno(err))
	}
	defer unix.Close(fd)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		return fmt.Errorf("%s: KVM_GET_API_VERSION: %w", path, describeErrno(err))
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("%s: KVM API version %d, want %d", path, v, kvmAPIVersion)
	}
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		return fmt.Errorf("%s: KVM_CREATE_VM: %w", path, describeErrno(err))
	}
	unix.Close(vm)
	return nil
}

// describeErrno spells the errno as strerror does ("permission denied").
func describeErrno(err error) error {
	var e unix.Errno
	if errors.As(err, &e) {
		return errors.New(e.Error())
	}
	return err
}

// seabiosDone are SeaBIOS debug log lines that mean the firmware ran to the boot
// stage.
var seabiosDone = [][]byte{[]byte("No bootable device"), []byte("Booting from")}

// qemuKVMProbeTimeout bounds the SeaBIOS run; under KVM it takes well under a second,
// and a guest that is not there by then is hung.
const qemuKVMProbeTimeout = 15 * time.Second

// probeQEMUKVM runs a disk-less qemu with -accel kvm -cpu host until SeaBIOS's debug
// log (I/O port 0x402) says it reached the boot stage.
func probeQEMUKVM(ctx context.Context) error {
	r := runQEMUProbe(ctx, qemuKVMProbeTimeout, seabiosDone, func(log string) []string {
		return []string{"-m", "32", "-serial", "none",
			"-debugcon", "file:" + qemuEscape(log), "-global", "isa-debugcon.iobase=0x402"}
	})
	switch {
	case r.err == nil:
		return nil
	case r.hung:
		return fmt.Errorf("/dev/kvm opens, but a guest under qemu -accel kvm -cpu host hangs (SeaBIOS stopped after %q within %s)", lastLine(r.log), qemuKVMProbeTimeout)
	case r.exited:
		return fmt.Errorf("/dev/kvm opens, but qemu -accel kvm -cpu host fails (%v): %s", r.err, errorLine(r.stderr))
	}
	return r.err
}

// probeRun is how one probe guest ended. err is nil when its log reached a done
// marker; otherwise hung (the timeout passed) or exited (qemu stopped by itself)
// says why, and neither is set when qemu did not start or the caller gave up.
type probeRun struct {
	err          error
	hung, exited bool
	log, stderr  string
}

// runQEMUProbe starts a disk-less, network-less qemu -accel kvm -cpu host with the
// arguments that args gives for its log file, and waits up to timeout for the log to
// show one of done.
func runQEMUProbe(ctx context.Context, timeout time.Duration, done [][]byte, args func(log string) []string) probeRun {
	dir, err := os.MkdirTemp("", "instancestore-kvm-probe-")
	if err != nil {
		return probeRun{err: err}
	}
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "probe.log")
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	argv := append([]string{"-accel", "kvm", "-cpu", "host", "-machine", "pc", "-nodefaults", "-nic", "none",
		"-display", "none", "-no-reboot", "-monitor", "none"}, args(logPath)...)
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", argv...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + dir}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return probeRun{err: fmt.Errorf("/dev/kvm opens, but qemu-system-x86_64 does not start (Debian package qemu-system-x86): %w", err)}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	reached := func() bool {
		b, _ := os.ReadFile(logPath)
		for _, s := range done {
			if bytes.Contains(b, s) {
				return true
			}
		}
		return false
	}
	// end is called once qemu has exited, so that stderr is complete and no longer
	// written to; a log that reached a done marker wins over how qemu ended.
	end := func(r probeRun) probeRun {
		if reached() {
			r = probeRun{}
		}
		b, _ := os.ReadFile(logPath)
		r.log, r.stderr = string(b), stderr.String()
		return r
	}
	for {
		select {
		case err := <-exited:
			if err == nil {
				err = errors.New("exit status 0")
			}
			return end(probeRun{err: err, exited: true})
		case <-ctx.Done():
			cmd.Process.Kill()
			<-exited
			if err := parent.Err(); err != nil {
				return end(probeRun{err: fmt.Errorf("/dev/kvm opens; probing qemu -accel kvm was cut short: %w", err)})
			}
			return end(probeRun{err: ctx.Err(), hung: true})
		case <-tick.C:
			if reached() {
				cmd.Process.Kill()
				<-exited
				return end(probeRun{})
			}
		}
	}
}

// errorLine is the first line of qemu's stderr that says "error", else its last line.
func errorLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "error") {
			return strings.TrimSpace(l)
		}
	}
	return lastLine(s)
}
