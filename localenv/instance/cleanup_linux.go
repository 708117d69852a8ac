package instance

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const netnsDir = "/run/netns"

// Cleanup sweeps what crashed runs left behind: image mounts, network namespaces (and
// the processes still in them), veth links, runtime directories and run locks whose
// names start with prefix (Prefix, or Prefix followed by a run id) and whose run is no
// longer alive, and (for Prefix itself) the service address when no live process uses
// it. Objects of live runs, including the caller's, are never touched: stop
// those with Instance.Stop and the unmount func of MountImage.
func Cleanup(prefix string) error {
	if prefix == "" {
		prefix = Prefix
	}
	if !strings.HasPrefix(prefix, Prefix) {
		return fmt.Errorf("instance.Cleanup(%q): the prefix must start with %q", prefix, Prefix)
	}
	dead := func(name string) bool { return strings.HasPrefix(name, prefix) && !runAlive(name) }
	var errs []error

	mounts, err := ourMounts()
	if err != nil {
		errs = append(errs, err)
	}
	for _, mp := range mounts {
		if dead(filepath.Base(mp)) {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("unmounting leftover %s: %w", mp, err))
				continue
			}
			os.Remove(mp)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(StateDir, "mnt")); err == nil {
		for _, e := range ents {
			if dead(e.Name()) {
				os.Remove(filepath.Join(StateDir, "mnt", e.Name())) // only if empty: never delete image contents
			}
		}
	}

	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if dead(e.Name()) {
				if err := killNetNSProcs(e.Name()); err != nil {
					errs = append(errs, err)
				}
				if err := deleteLink(e.Name()); err != nil {
					errs = append(errs, err)
				}
				if err := removeNetNS(e.Name()); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, ifc := range ifs {
			if dead(ifc.Name) {
				if err := deleteLink(ifc.Name); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(StateDir, "inst")); err == nil {
		for _, e := range ents {
			if dead(e.Name()) {
				if err := os.RemoveAll(filepath.Join(StateDir, "inst", e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(StateDir, "runs")); err == nil {
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".lock")
			if ok && !strings.HasPrefix(id, ".") && dead(Prefix+id) {
				removeDeadRun(filepath.Join(StateDir, "runs", e.Name()))
			}
		}
	}
	if prefix == Prefix {
		if err := removeUnusedServiceAddr(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeDeadRun unlinks a run lock while holding it, so that a live owner is never
// robbed of its lock.
func removeDeadRun(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		os.Remove(path)
	}
}

// ourMounts lists the mount points under StateDir/mnt, deepest first.
func ourMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	base := filepath.Join(StateDir, "mnt") + "/"
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if strings.HasPrefix(mp, base) {
			out = append(out, mp)
		}
	}
	for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
		out[l], out[r] = out[r], out[l]
	}
	return out, sc.Err()
}

// unescapeMount decodes the \ooo escapes of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// netNSPIDs lists the processes whose network namespace is the named one.
func netNSPIDs(name string) ([]int, error) {
	var ns unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, name), &ns); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("network namespace %s: %w", name, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && st.Ino == ns.Ino && st.Dev == ns.Dev {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNetNSProcs kills every process in the named network namespace and waits until
// they are gone.
func killNetNSProcs(name string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids, err := netNSPIDs(name)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("network namespace %s: processes %v do not die", name, pids)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeNetNS kills what runs in the namespace and deletes it; a missing namespace is
// not an error.
func removeNetNS(name string) error {
	if _, err := os.Lstat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := killNetNSProcs(name); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "ip", "netns", "del", name); err != nil {
		if _, serr := os.Lstat(filepath.Join(netnsDir, name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// deleteLink deletes a host link (and so its veth peer); a missing link is not an error.
func deleteLink(name string) error {
	if _, err := net.InterfaceByName(name); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "ip", "link", "del", name); err != nil {
		if _, lerr := net.InterfaceByName(name); lerr != nil {
			return nil
		}
		return err
	}
	return nil
}
