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
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == "sshd" {
			return fmt.Sprintf("/proc/%d/root/dev", pid), nil
		}
	}
	return "", fmt.Errorf("no sshd in %s to reach the instance's /dev through", netns)
}
