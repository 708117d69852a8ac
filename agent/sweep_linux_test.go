package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// TestSweepAfterSIGKILL: a run holds its lock from a process that then gets SIGKILL,
// with a filesystem on a (non-autoclear) loop device mounted in its scratch. While it
// lives, a sweep touches nothing; after the kill, a sweep unmounts, detaches and
// removes everything and says so.
func TestSweepAfterSIGKILL(t *testing.T) {
	testroot.Require(t)
	stateDir, scratch := t.TempDir(), t.TempDir()
	dir := filepath.Join(scratch, "instancestore-run-test")
	mnt := filepath.Join(dir, "instancestore-bundle-1", "mnt")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(mnt, 0o700))
	img := filepath.Join(dir, "instancestore-bundle-1", "image.img")
	must(os.WriteFile(img, nil, 0o600))
	must(os.Truncate(img, 16<<20))
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	must(err)
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run(); exec.Command("losetup", "-d", loop).Run() })
	if out, err := exec.Command("mount", loop, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}

	lock := filepath.Join(stateDir, "4242.lock")
	b, _ := json.Marshal(runMarker{PID: 4242, Started: time.Now(), Dir: dir})
	must(os.WriteFile(filepath.Join(stateDir, "4242.json"), b, 0o600))
	child := exec.Command("flock", "-o", lock, "sh", "-c", "echo locked; exec sleep 600")
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := child.StdoutPipe()
	must(err)
	must(child.Start())
	t.Cleanup(func() { syscall.Kill(-child.Process.Pid, syscall.SIGKILL); child.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "locked\n" {
		t.Fatalf("lock holder said %q", line)
	}

	if msgs := Sweep(stateDir); len(msgs) != 0 {
		t.Fatalf("a sweep while the run lives did something: %v", msgs)
	}
	if !mounted(t, mnt) {
		t.Fatal("a sweep while the run lives unmounted its image")
	}

	must(syscall.Kill(-child.Process.Pid, syscall.SIGKILL)) // the holder and its children
	child.Wait()
	msgs := Sweep(stateDir)
	t.Logf("sweep: %v", msgs)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "swept what a dead agent run left (pid 4242") || !strings.Contains(msgs[0], "mount "+mnt) ||
		!strings.Contains(msgs[0], "loop device "+loop) {
		t.Fatalf("sweep after the kill said %v", msgs)
	}
	if mounted(t, mnt) {
		t.Error("the dead run's mount is still there")
	}
	if b, err := os.ReadFile("/sys/block/" + filepath.Base(loop) + "/loop/backing_file"); err == nil {
		t.Errorf("%s is still attached to %s", loop, b)
	}
	for _, p := range []string{dir, filepath.Join(stateDir, "4242.json"), lock} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there", p)
		}
	}
}

func mounted(t *testing.T, dir string) bool {
	ms, err := volume.ReadMounts()
	if err != nil {
		t.Fatal(err)
	}
	_, err = volume.MountAt(ms, dir)
	return err == nil
}

// TestStartRunMarksAndReleases: a run's marker is locked while it lives and gone after.
func TestStartRunMarksAndReleases(t *testing.T) {
	stateDir, scratch := t.TempDir(), t.TempDir()
	var logs []string
	run, err := startRun(context.Background(), stateDir, func() (string, *scratchDisk) { return scratch, nil }, func(f string, a ...any) { logs = append(logs, f) })
	if err != nil {
		t.Fatal(err)
	}
	if msgs := Sweep(stateDir); len(msgs) != 0 {
		t.Fatalf("the live run was swept: %v", msgs)
	}
	if _, err := os.Stat(run.dir); err != nil {
		t.Fatalf("the live run's scratch is gone: %v", err)
	}
	if err := run.release(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(stateDir); len(left) != 0 {
		t.Fatalf("state directory after release: %v", left)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Fatalf("scratch after release: %v", left)
	}
}

// scratchRunEnv makes the test binary a stand-in agent (TestScratchRunHelper): it
// starts a run whose scratch is the disk named in the variable, says where the run is
// and waits to be killed.
const scratchRunEnv = "INSTANCESTORE_TEST_SCRATCH_RUN"

// TestScratchRunHelper is the stand-in agent process of
// TestSweepScratchDiskAfterSIGKILL; it does nothing unless that test started it.
func TestScratchRunHelper(t *testing.T) {
	spec := os.Getenv(scratchRunEnv)
	if spec == "" {
		return
	}
	stateDir, dev, _ := strings.Cut(spec, ",")
	run, err := startRun(context.Background(), stateDir, func() (string, *scratchDisk) {
		return os.TempDir(), &scratchDisk{Dev: dev, Size: 64 << 20}
	}, func(f string, a ...any) { fmt.Printf("log: "+f+"\n", a...) })
	if err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	if err := os.WriteFile(filepath.Join(run.dir, "image.img"), []byte("half an image"), 0o600); err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("run %s\n", run.dir)
	time.Sleep(10 * time.Minute)
	os.Exit(1)
}

// TestSweepScratchDiskAfterSIGKILL: an agent run (this test binary as a stand-in
// process, through the real startRun) formats and mounts an NVMe instance store disk
// (a loop device stands for it) as its scratch, writes into it and is SIGKILLed. The
// next run's sweep finds the disk by the run's marker, unmounts it, removes its mount
// point and wipes it, and the run after that can use the disk again.
func TestSweepScratchDiskAfterSIGKILL(t *testing.T) {
	testroot.Require(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	file := filepath.Join(t.TempDir(), "nvme1n1.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 64<<20); err != nil {
		t.Fatal(err)
	}
	l, err := volume.AttachLoop(file, 0, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Detach() })

	child := exec.Command(os.Args[0], "-test.run=^TestScratchRunHelper$", "-test.count=1")
	child.Env = append(os.Environ(), scratchRunEnv+"="+stateDir+","+l.Path)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	point := filepath.Join(stateDir, fmt.Sprint(child.Process.Pid)+".scratch")
	t.Cleanup(func() {
		child.Process.Kill()
		child.Wait()
		exec.Command("umount", point).Run()
	})
	var runDir string
	var said []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		said = append(said, sc.Text())
		if d, ok := strings.CutPrefix(sc.Text(), "run "); ok {
			runDir = d
			break
		}
	}
	if runDir == "" {
		t.Fatalf("the stand-in agent never started its run: %q", said)
	}
	if !strings.Contains(strings.Join(said, "\n"), "log: scratch: the NVMe instance store disk "+l.Path+" (64 MiB), formatted and mounted on "+point+" for this run") {
		t.Errorf("the run did not say it mounted the disk on %s: %q", point, said)
	}
	if filepath.Dir(runDir) != point || !mounted(t, point) {
		t.Fatalf("the run's scratch %s is not on the disk mounted at %s", runDir, point)
	}
	if msgs := Sweep(stateDir); len(msgs) != 0 {
		t.Fatalf("a sweep while the run lives did something: %v", msgs)
	}
	if !mounted(t, point) {
		t.Fatal("a sweep while the run lives unmounted its scratch disk")
	}

	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if !mounted(t, point) {
		t.Fatal("the killed run's scratch disk is not mounted any more: the test shows nothing")
	}
	// The next run sweeps it first, then picks the same disk (blank again).
	var logs []string
	run, err := startRun(context.Background(), stateDir, func() (string, *scratchDisk) {
		if mounted(t, point) {
			t.Error("the disk is still mounted when the next run picks its scratch")
		}
		return t.TempDir(), &scratchDisk{Dev: l.Path, Size: 64 << 20}
	}, func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the next run said: %q", logs)
	if len(logs) < 1 || !strings.Contains(logs[0], fmt.Sprintf("swept what a dead agent run left (pid %d", child.Process.Pid)) ||
		!strings.Contains(logs[0], "scratch "+runDir) || !strings.Contains(logs[0], "scratch disk mount "+point+" ("+l.Path+")") ||
		!strings.Contains(logs[0], "mount point "+point) || !strings.Contains(logs[0], "scratch filesystem on "+l.Path+" (wiped)") {
		t.Errorf("the sweep did not report the disk's unmount and wipe: %q", logs)
	}
	for _, p := range []string{point, filepath.Join(stateDir, fmt.Sprint(child.Process.Pid)+".json"), filepath.Join(stateDir, fmt.Sprint(child.Process.Pid)+".lock")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s of the dead run is still there", p)
		}
	}
	if run.disk == nil || !mounted(t, run.disk.Dir) {
		t.Fatalf("the next run did not get the swept disk as its scratch: %q", logs)
	}
	dir := run.disk.Dir
	if err := run.release(); err != nil {
		t.Fatal(err)
	}
	if last := logs[len(logs)-1]; last != "scratch: the NVMe instance store disk "+l.Path+" unmounted from "+dir+" and wiped" {
		t.Errorf("the release said %q", last)
	}
	if mounted(t, dir) {
		t.Errorf("%s is still mounted after the release", dir)
	}
	if ok, err := blank(l.Path); err != nil || !ok {
		t.Errorf("the disk is not blank after the next run released it: %v %v", ok, err)
	}
	if left, _ := os.ReadDir(stateDir); len(left) != 0 {
		t.Errorf("state directory after the release: %v", left)
	}
}
