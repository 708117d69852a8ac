package ec2sim

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// loopNodes is how many /dev/loopN nodes an instance gets (the kernel makes loop
// devices on demand through /dev/loop-control, but the instance's /dev is a private
// tmpfs where no node appears by itself).
const loopNodes = 256

// addLoopDevices gives the instance whose sshd runs in network namespace netns what an
// EC2 instance has and bundle-vol needs: /dev/loop-control and /dev/loop0..N. It
// reaches the instance's private /dev through /proc/PID/root of its sshd. Nodes that
// already exist are left alone.
func addLoopDevices(netns string) error {
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return nil // no loop support on the host: nothing to pass on
	}
	dev, err := instanceDevDir(netns)
	if err != nil {
		return err
	}
	mk := func(name string, mode uint32, major, minor uint32) error {
		err := unix.Mknod(filepath.Join(dev, name), mode, int(unix.Mkdev(major, minor)))
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("creating /dev/%s in the instance: %w", name, err)
		}
		return nil
	}
	if err := mk("loop-control", unix.S_IFCHR|0o660, 10, 237); err != nil {
		return err
	}
	for i := uint32(0); i < loopNodes; i++ {
		if err := mk("loop"+strconv.Itoa(int(i)), unix.S_IFBLK|0o660, 7, i); err != nil {
			return err
		}
	}
	return nil
}

// instanceDevDir is the instance's private /dev, reached through /proc/PID/root of
// the sshd in network namespace netns.
func instanceDevDir(netns string) (string, error) {
	out, err := exec.Command("ip", "netns", "pids", netns).Output()
	if err != nil {
		return "", fmt.Errorf("listing the processes of %s: %w", netns, err)
	}
	// The listening sshd, not a per-connection child: a child ends with its session,
	// and its /proc/PID/root with it (a hot-plug that picked one failed with ENOENT).
	comm := func(pid int) string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return strings.TrimSpace(string(b))
	}
	parent := func(pid int) int {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// pid (comm) state ppid ...: comm may hold spaces, so read after its ')'.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 1 {
				ppid, _ := strconv.Atoi(f[1])
				return ppid
			}
		}
		return 0
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || comm(pid) != "sshd" || comm(parent(pid)) == "sshd" {
			continue
		}
		dev := fmt.Sprintf("/proc/%d/root/dev", pid)
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
	}
	return "", fmt.Errorf("no sshd in %s to reach the instance's /dev through", netns)
}
