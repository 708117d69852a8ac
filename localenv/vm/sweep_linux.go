package vm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sweep removes what VMs of a killed process left in workDir (a VMLauncher's
// WorkDir): it kills each instance directory's qemu (its pid file, checked against the
// process's command line so that a recycled pid is never hit) and removes the
// directory with its overlay and disks. Their network namespaces belong to the dead
// process's run and go with instance.Cleanup. Call it only when no live launcher uses
// workDir.
func Sweep(workDir string) error {
	ents, err := os.ReadDir(workDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(workDir, e.Name())
		if pid, ok := qemuOf(dir); ok {
			syscall.Kill(pid, syscall.SIGKILL)
			deadline := time.Now().Add(20 * time.Second)
			for processExists(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if processExists(pid) {
				errs = append(errs, fmt.Errorf("qemu %d of %s does not die", pid, dir))
				continue
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// qemuOf is the live qemu whose pid file is in dir.
func qemuOf(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, PIDFileName))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, IsQEMUOf(pid, dir)
}

// IsQEMUOf tells whether pid is a running qemu-system process whose command line
// names a file in dir.
func IsQEMUOf(pid int, dir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "qemu-system") {
		return false
	}
	return strings.Contains(string(cmdline), dir+"/") && processExists(pid)
}

// QEMUProcesses lists the running qemu processes whose command line names a file
// under dir (for leftover reports).
func QEMUProcesses(dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && IsQEMUOf(pid, dir) {
			out = append(out, pid)
		}
	}
	return out
}

// processExists: pid runs and is not a zombie.
func processExists(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}
