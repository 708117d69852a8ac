package vm_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

// helperEnv makes the test binary a launcher process that a test kills: it starts a VM
// of a never-booting image in the directory the variable names and waits forever.
const helperEnv = "INSTANCESTORE_VM_TEST_LAUNCHER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(runHelperLauncher(dir))
	}
	os.Exit(m.Run())
}

func runHelperLauncher(dir string) int {
	img := filepath.Join(dir, "broken.img")
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(64 << 20)
		f.Close()
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	kernel, err := localenv.DebianVMKernel(context.Background(), nil)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	l := &vm.VMLauncher{WorkDir: filepath.Join(dir, "instances"), ProbeKernel: kernel, Logf: func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
	}}
	_, err = l.Launch(context.Background(), ec2sim.LaunchSpec{InstanceID: "i-00000000000crash", Root: ec2sim.RootSource{Image: img},
		InstanceType: "m3.medium", Virtualization: "hvm", BlockDevices: []ec2sim.DeviceMapping{{DeviceName: "/dev/sdb", VirtualName: "ephemeral0"}}})
	fmt.Println("error:", err)
	return 1
}

// TestDownAfterKilledLauncher: the process that runs a VM dies by SIGKILL; `down`'s
// sweep (localenv.Down) leaves no qemu process, network namespace, instance
// directory (overlay, instance store disk) behind.
func TestDownAfterKilledLauncher(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	started := false
	for !started && sc.Scan() {
		t.Logf("launcher: %s", sc.Text())
		if strings.HasPrefix(sc.Text(), "error:") {
			t.Fatal(sc.Text())
		}
		started = strings.Contains(sc.Text(), "started in")
	}
	if !started {
		t.Fatal("the launcher process did not start its VM")
	}
	idir := filepath.Join(dir, "instances", "i-00000000000crash")
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(idir, vm.PIDFileName))
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if time.Now().After(deadline) {
			t.Fatal("qemu wrote no pid file")
		}
	}
	nsb, err := os.ReadFile(filepath.Join(idir, "netns"))
	if err != nil {
		t.Fatal(err)
	}
	ns := strings.TrimSpace(string(nsb))
	if _, err := os.Stat(filepath.Join(idir, "ephemeral0.img")); err != nil {
		t.Errorf("no instance store disk: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := localenv.Down(ctx, dir); err != nil {
		t.Fatalf("down after the launcher was killed: %v", err)
	}
	if vm.IsQEMUOf(pid, idir) {
		t.Errorf("qemu %d still runs", pid)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		t.Errorf("network namespace %s still there", ns)
	}
	if _, err := os.Stat(idir); err == nil {
		t.Errorf("instance directory %s still there", idir)
	}
	if l := localenv.Leftovers(dir); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
}
