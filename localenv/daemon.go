//go:build linux

package localenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

// Serve runs the environment in this process until ctx ends: it starts everything,
// writes the pid file and then the env file (its presence means "ready"), calls ready,
// and on cancellation takes everything down and removes both files.
func Serve(ctx context.Context, opts Options, ready func(*Env)) error {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return err
	}
	opts.Dir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if pid, alive := daemonPID(dir); alive && pid != os.Getpid() {
		return fmt.Errorf("an environment is already up in %s (pid %d): run `instancestore-localenv down --dir %s` first", dir, pid, dir)
	}
	os.Remove(filepath.Join(dir, EnvFileName))
	if err := os.WriteFile(filepath.Join(dir, PIDFileName), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(dir, PIDFileName))
	e, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	defer os.Remove(filepath.Join(dir, EnvFileName))
	if err := WriteEnvFile(filepath.Join(dir, EnvFileName), e.Vars()); err != nil {
		e.Close()
		return err
	}
	if ready != nil {
		ready(e)
	}
	<-ctx.Done()
	opts.Logf("localenv: shutting down")
	return e.Close()
}

// Up starts `exe args...` (which must call Serve) as a daemon in its own session, with
// its output appended to DIR/localenv.log, and waits until it is ready.
func Up(ctx context.Context, dir, exe string, args []string) ([]Var, error) {
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if pid, alive := daemonPID(dir); alive {
		return nil, fmt.Errorf("an environment is already up in %s (pid %d): run `instancestore-localenv down --dir %s` first", dir, pid, dir)
	}
	os.Remove(filepath.Join(dir, EnvFileName))
	logPath := filepath.Join(dir, LogFileName)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the environment daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	envPath := filepath.Join(dir, EnvFileName)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("the environment daemon exited before it was ready (%v); see %s:\n%s", err, logPath, tail(logPath, 20))
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			return nil, fmt.Errorf("waiting for the environment: %w (daemon signalled to stop; see %s)", ctx.Err(), logPath)
		case <-tick.C:
			if _, err := os.Stat(envPath); err == nil {
				// Released, not waited for: the daemon lives on in its own session.
				cmd.Process.Release()
				return ReadEnvFile(envPath)
			}
		}
	}
}

// Down stops the daemon of dir (SIGTERM, then waits for it to terminate its instances
// and exit), sweeps what a crashed run may have left (namespaces, links, mounts) and
// reports anything that still remains.
func Down(ctx context.Context, dir string) error {
	if err := RequireRoot(); err != nil {
		return err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	var errs []error
	if pid, alive := daemonPID(dir); alive {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return fmt.Errorf("stopping the environment daemon (pid %d): %w", pid, err)
		}
		for alive {
			select {
			case <-ctx.Done():
				return fmt.Errorf("the environment daemon (pid %d) did not stop: %w; see %s", pid, ctx.Err(), filepath.Join(dir, LogFileName))
			case <-time.After(100 * time.Millisecond):
			}
			alive = processAlive(pid)
		}
	}
	os.Remove(filepath.Join(dir, PIDFileName))
	os.Remove(filepath.Join(dir, EnvFileName))
	// VMs first (their pid files), then the namespaces and links of the dead run.
	if err := vm.Sweep(filepath.Join(dir, "instances")); err != nil {
		errs = append(errs, fmt.Errorf("sweeping leftover VMs: %w", err))
	}
	if err := instance.Cleanup(instance.Prefix); err != nil {
		errs = append(errs, fmt.Errorf("sweeping leftovers: %w", err))
	}
	os.RemoveAll(filepath.Join(dir, "instances"))
	// An autoclear loop device is detached by the kernel after its last close, from a
	// work queue: on a loaded host it can still be bound for a moment after the
	// unmount. Give what remains up to 10 s to go before calling it left over.
	l := Leftovers(dir)
	for deadline := time.Now().Add(10 * time.Second); len(l) > 0 && time.Now().Before(deadline); l = Leftovers(dir) {
		time.Sleep(200 * time.Millisecond)
	}
	if len(l) > 0 {
		errs = append(errs, fmt.Errorf("still present after down:\n  %s", strings.Join(l, "\n  ")))
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the environment in dir still exists: its daemon, its VMs'
// qemu processes and directories, mounts under dir and loop devices backed by files in
// dir (an instance's root image copy).
func Leftovers(dir string) []string {
	var out []string
	if pid, alive := daemonPID(dir); alive {
		out = append(out, fmt.Sprintf("process %d (the environment daemon)", pid))
	}
	for _, pid := range vm.QEMUProcesses(dir) {
		out = append(out, fmt.Sprintf("process %d (qemu of a VM instance)", pid))
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "instances")); err == nil {
		for _, e := range ents {
			out = append(out, "instance directory "+filepath.Join(dir, "instances", e.Name()))
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(mi), "\n") {
			f := strings.Fields(l)
			// An instance's loop-mounted root is found below by its loop device, which
			// is backed by the instance's image copy in dir.
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				out = append(out, "mount "+f[4])
			}
		}
	}
	if ents, err := os.ReadDir("/sys/block"); err == nil {
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "loop") {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
			if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
				out = append(out, "loop device /dev/"+e.Name()+" on "+strings.TrimSpace(string(b)))
			}
		}
	}
	return out
}

// daemonPID reads dir's pid file and tells whether that process is alive and is an
// instancestore-localenv (not a recycled pid).
func daemonPID(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, PIDFileName))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if !processAlive(pid) {
		return pid, false
	}
	if pid == os.Getpid() {
		return pid, true
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return pid, false
	}
	self, _ := os.Executable()
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if filepath.Base(exe) == filepath.Base(self) || strings.Contains(string(cmdline), "localenv") {
		return pid, true
	}
	return pid, false
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// processAlive tells whether pid runs. A zombie does not: the daemon, orphaned by `up`,
// may wait for a reaper (in containers, PID 1 may never reap it).
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, so read after the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}
