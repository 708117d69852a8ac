package agent

import (
	"bufio"
	"encoding/json"
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
	run, err := startRun(stateDir, scratch, func(f string, a ...any) { logs = append(logs, f) })
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
