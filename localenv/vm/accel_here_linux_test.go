package vm_test

import (
	"context"
	"strings"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

// probeKernel is the kernel VMLauncher.ProbeKernel gets, as in localenv.Start.
func probeKernel(t *testing.T) string {
	t.Helper()
	kernel, err := localenv.DebianVMKernel(context.Background(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return kernel
}

// The real probe on this host, with the kernel the launcher boots it with. Where KVM
// works it says so; where it does not it gives the reason, which the launcher logs.
// Two kinds of CI machine have been seen: /dev/kvm answers its ioctls but qemu -cpu
// host aborts on an MSR; and SeaBIOS runs under KVM but Debian's kernel spins after
// its real-mode setup ("Probing EDD ... ok", then nothing). The SeaBIOS step alone
// passed on the second, and every VM instance stayed pending until its timeout.
func TestProbeKVMHere(t *testing.T) {
	testroot.Require(t)
	kernel := probeKernel(t)
	err := vm.ProbeKVM(context.Background(), kernel)
	if err == nil {
		t.Logf("KVM is usable here: %s boots to its root-mount panic under qemu -accel kvm -cpu host", kernel)
		return
	}
	t.Logf("KVM is not usable here: %v", err)
	if !strings.HasPrefix(err.Error(), "/dev/kvm") || len(err.Error()) < len("/dev/kvm: x") {
		t.Errorf("reason %q does not say what about /dev/kvm failed", err)
	}
	a, cerr := vm.ChooseAccel("", err)
	if cerr != nil || a.Name != "tcg" || !strings.Contains(a.Reason, err.Error()) {
		t.Errorf("auto with that reason: %+v, %v", a, cerr)
	}
}
