// Command bootinit is the whole userland of the boot check, one static binary in two
// roles. As /init of the initrd it loads the virtio and ext4 modules listed in
// /mods/order, mounts root= and switches to it; as the image's /sbin/init-test it
// prints the marker the test waits for, with what the kernel mounted as /, and powers
// the machine off.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if filepath.Base(os.Args[0]) == "init-test" {
		imageInit()
		return
	}
	if err := initrd(); err != nil {
		fmt.Println("bootinit: initrd failed:", err)
	}
	time.Sleep(time.Second)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func imageInit() {
	mounts := "?"
	unix.Mount("proc", "/proc", "proc", 0, "")
	if b, err := os.ReadFile("/proc/mounts"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[1] == "/" {
				mounts = f[0] + " " + f[2]
			}
		}
	}
	host, _ := os.ReadFile("/etc/hostname")
	fmt.Printf("\nINSTANCESTORE-BOOT-OK root=%s host=%s\n", mounts, strings.TrimSpace(string(host)))
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func initrd() error {
	unix.Mount("proc", "/proc", "proc", 0, "")
	unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	order, err := os.ReadFile("/mods/order")
	if err != nil {
		return err
	}
	for _, m := range strings.Fields(string(order)) {
		f, err := os.Open("/mods/" + m + ".ko")
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("loading %s: %w", m, err)
		}
	}
	root, init := "/dev/vda", "/sbin/init"
	cmdline, _ := os.ReadFile("/proc/cmdline")
	for _, a := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(a, "root="); ok {
			root = v
		}
		if v, ok := strings.CutPrefix(a, "init="); ok {
			init = v
		}
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(root); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Println("bootinit: mounting", root)
	if err := unix.Mount(root, "/newroot", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mounting %s: %w", root, err)
	}
	unix.Unmount("/proc", 0)
	unix.Unmount("/sys", 0)
	if err := unix.Mount("/dev", "/newroot/dev", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving /dev: %w", err)
	}
	if err := unix.Chdir("/newroot"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	unix.Chdir("/")
	return unix.Exec(init, []string{init}, os.Environ())
}
