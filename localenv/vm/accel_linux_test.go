package vm

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestChooseAccel(t *testing.T) {
	unusable := errors.New("/dev/kvm: permission denied")
	for _, tc := range []struct {
		name, override, cpu string
		probeErr            error
		wantProbe           bool
		want                string // accelerator name; "" wants an error
		wantArgs            string
		wantInReason        []string
	}{
		{name: "auto, KVM usable", probeErr: nil, wantProbe: true, want: "kvm", wantArgs: "-accel kvm -cpu host",
			wantInReason: []string{"using KVM"}},
		{name: "auto, KVM unusable", probeErr: unusable, wantProbe: true, want: "tcg", wantArgs: "-accel tcg -cpu max",
			wantInReason: []string{"/dev/kvm: permission denied", "using TCG"}},
		{name: "explicit auto", override: "auto", probeErr: unusable, wantProbe: true, want: "tcg", wantArgs: "-accel tcg -cpu max"},
		{name: "tcg asked, KVM usable", override: "tcg", wantProbe: false, want: "tcg", wantArgs: "-accel tcg -cpu max",
			wantInReason: []string{AccelEnv + "=tcg"}},
		{name: "tcg with another CPU model", override: "TCG", cpu: "qemu64", want: "tcg", wantArgs: "-accel tcg -cpu qemu64"},
		{name: "auto, unusable, another CPU model", cpu: "Haswell", probeErr: unusable, wantProbe: true, want: "tcg", wantArgs: "-accel tcg -cpu Haswell"},
		{name: "kvm asked, usable", override: "kvm", wantProbe: true, want: "kvm", wantArgs: "-accel kvm -cpu host"},
		{name: "kvm asked, unusable", override: "kvm", probeErr: unusable, wantProbe: true,
			wantInReason: []string{AccelEnv + "=kvm", "/dev/kvm: permission denied", "tcg"}},
		{name: "unknown", override: "hvf", wantInReason: []string{AccelEnv, "hvf", "kvm, tcg or auto"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probed := false
			probe := func(context.Context) error { probed = true; return tc.probeErr }
			got, err := chooseAccel(context.Background(), tc.override, tc.cpu, probe)
			if probed != tc.wantProbe {
				t.Errorf("probe ran: %v, want %v", probed, tc.wantProbe)
			}
			text := got.Reason
			if tc.want == "" {
				if err == nil {
					t.Fatalf("chose %+v, want an error", got)
				}
				text = err.Error()
			} else {
				if err != nil {
					t.Fatalf("error %v, want %s", err, tc.want)
				}
				if got.Name != tc.want || strings.Join(got.Args, " ") != tc.wantArgs {
					t.Errorf("chose %s %q, want %s %q", got.Name, strings.Join(got.Args, " "), tc.want, tc.wantArgs)
				}
				if got.Reason == "" {
					t.Error("no reason given")
				}
			}
			for _, w := range tc.wantInReason {
				if !strings.Contains(text, w) {
					t.Errorf("%q does not say %q", text, w)
				}
			}
		})
	}
}

// The launcher decides once, with the override from its field before the
// environment's.
func TestLauncherAcceleratorOnce(t *testing.T) {
	t.Setenv(AccelEnv, "kvm")
	probes := 0
	var logged []string
	l := &VMLauncher{Accel: "auto", probe: func(context.Context) error { probes++; return errors.New("/dev/kvm: no such file or directory") },
		Logf: func(f string, a ...any) { logged = append(logged, f) }}
	for i := 0; i < 3; i++ {
		a, err := l.Accelerator(context.Background())
		if err != nil || a.Name != "tcg" {
			t.Fatalf("Accelerator: %+v, %v; want tcg (the field's auto wins over %s=kvm)", a, err, AccelEnv)
		}
	}
	if probes != 1 || len(logged) != 1 {
		t.Errorf("%d probes and %d log lines, want 1 each", probes, len(logged))
	}
	l = &VMLauncher{probe: func(context.Context) error { return errors.New("/dev/kvm: permission denied") }}
	if _, err := l.Accelerator(context.Background()); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("%s=kvm on an unusable host: %v, want the reason", AccelEnv, err)
	}
}

func TestProbeKVMDevice(t *testing.T) {
	err := probeKVMDevice("/nonexistent/kvm")
	if err == nil || err.Error() != "/nonexistent/kvm: no such file or directory" {
		t.Errorf("missing device: %v", err)
	}
	// A character device that is not KVM: the API version ioctl fails.
	err = probeKVMDevice("/dev/null")
	if err == nil || !strings.Contains(err.Error(), "/dev/null: KVM_GET_API_VERSION: inappropriate ioctl for device") {
		t.Errorf("/dev/null: %v", err)
	}
}
