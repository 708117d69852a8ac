package instance

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

var (
	liteOnce sync.Once
	liteDir  string
	liteErr  error
)

// liteRoot builds one lite root shared by the tests of this package (instances may
// share a root).
func liteRoot(t *testing.T) string {
	t.Helper()
	testroot.Require(t)
	liteOnce.Do(func() {
		liteDir, liteErr = os.MkdirTemp("", "isim-lite-")
		if liteErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		liteErr = BuildLiteRoot(ctx, filepath.Join(liteDir, "root"))
	})
	if liteErr != nil {
		t.Fatalf("BuildLiteRoot: %v", liteErr)
	}
	return filepath.Join(liteDir, "root")
}

func TestMain(m *testing.M) {
	if os.Getenv("ISIM_TEST_CRASH_HELPER") != "" {
		crashHelper()
		return
	}
	code := m.Run()
	if liteDir != "" {
		os.RemoveAll(liteDir)
	}
	os.Exit(code)
}

type clientKey struct {
	signer ssh.Signer
	line   string
}

func newClientKey(t *testing.T) clientKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return clientKey{s, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))}
}

// sshRun runs cmd on the instance as user and returns its standard output.
func sshRun(t *testing.T, inst *Instance, user string, key clientKey, cmd string) (string, error) {
	t.Helper()
	client, err := ssh.Dial("tcp", inst.SSHAddr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key.signer)},
		HostKeyCallback: ssh.FixedHostKey(inst.HostKey()),
		Timeout:         20 * time.Second,
	})
	if err != nil {
		return "", fmt.Errorf("ssh %s@%s: %w", user, inst.SSHAddr(), err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if err := sess.Run(cmd); err != nil {
		return stdout.String(), fmt.Errorf("%q as %s: %w (stderr: %s)", cmd, user, err, stderr.String())
	}
	return stdout.String(), nil
}

func TestBuildLiteRoot(t *testing.T) {
	testroot.Require(t)
	ctx := context.Background()
	if _, err := LiteRootTarball(ctx); err != nil { // warm the cache: the figure below is the cached build
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "root")
	start := time.Now()
	if err := BuildLiteRoot(ctx, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("BuildLiteRoot from cache: %v", time.Since(start))
	var size int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			size += fi.Size()
		}
		return nil
	})
	t.Logf("lite root size: %.1f MB", float64(size)/1e6)
	for _, p := range []string{"usr/sbin/sshd", "usr/bin/ssh", "usr/bin/scp", "usr/lib/openssh/sftp-server", "usr/bin/sudo", "usr/bin/sh", "etc/ssh/ssh_host_ed25519_key", "dev/null"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("lite root lacks %s: %v", p, err)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if target, err := os.Readlink(filepath.Join(dir, l)); err != nil || target != "usr/"+l {
			t.Errorf("/%s is not the usr-merge symlink: %q %v", l, target, err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "usr/bin/sudo"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("sudo is not setuid root: %v %v", fi.Mode(), err)
	}
	shadow, err := os.ReadFile(filepath.Join(dir, "etc/shadow"))
	if err != nil || !strings.Contains(string(shadow), "admin:*:") {
		t.Errorf("etc/shadow: want admin with *: %q %v", shadow, err)
	}
	// Every dynamic binary must find its libraries inside the root.
	out, err := exec.Command("chroot", dir, "/usr/bin/ssh", "-V").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OpenSSH") {
		t.Errorf("ssh -V in the root: %v: %s", err, out)
	}
	// Two builds get different host keys.
	dir2 := filepath.Join(t.TempDir(), "root")
	if err := BuildLiteRoot(ctx, dir2); err != nil {
		t.Fatal(err)
	}
	k1, _ := os.ReadFile(filepath.Join(dir, "etc/ssh/ssh_host_ed25519_key.pub"))
	k2, _ := os.ReadFile(filepath.Join(dir2, "etc/ssh/ssh_host_ed25519_key.pub"))
	if len(k1) == 0 || bytes.Equal(k1, k2) {
		t.Errorf("host keys missing or shared between builds: %q %q", k1, k2)
	}
	if err := BuildLiteRoot(ctx, dir2); err == nil {
		t.Errorf("BuildLiteRoot into a non-empty directory succeeded")
	}
}

func TestInstancesInParallel(t *testing.T) {
	root := liteRoot(t)
	ctx := context.Background()
	rootKey, adminKey := newClientKey(t), newClientKey(t)

	insts := make([]*Instance, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	start := time.Now()
	for n := range insts {
		wg.Go(func() {
			insts[n], errs[n] = Start(ctx, Config{
				Root:           root,
				Name:           fmt.Sprintf("web%d", n),
				AuthorizedKeys: map[string]string{"root": rootKey.line, "admin": adminKey.line},
			})
		})
	}
	wg.Wait()
	t.Logf("two instances answering SSH after %v", time.Since(start))
	for n, err := range errs {
		if err != nil {
			t.Fatalf("Start %d: %v", n, err)
		}
		t.Cleanup(func() { insts[n].Stop() })
	}
	if insts[0].Addr() == insts[1].Addr() || insts[0].ID() == insts[1].ID() {
		t.Fatalf("instances share an address or id: %v %v", insts[0].Addr(), insts[1].Addr())
	}
	for n, inst := range insts {
		if out, err := sshRun(t, inst, "root", rootKey, "hostname; cat /etc/hostname; id -u"); err != nil || out != fmt.Sprintf("web%d\nweb%d\n0\n", n, n) {
			t.Errorf("instance %d as root: %q %v", n, out, err)
		}
		if out, err := sshRun(t, inst, "admin", adminKey, "id -un; id -u; sudo -n id -u 2>&1"); err != nil || out != "admin\n1000\n0\n" {
			t.Errorf("instance %d as admin with sudo: %q %v", n, out, err)
		}
		// The instance sees only its own processes (its own PID namespace).
		if out, err := sshRun(t, inst, "root", rootKey, "ls /proc | grep -c '^[0-9]'"); err != nil || strings.TrimSpace(out) == "" || len(strings.TrimSpace(out)) > 2 {
			t.Errorf("instance %d process count: %q %v", n, out, err)
		}
	}
	// A console into the instance sees its root, hostname and processes.
	cmd, err := insts[1].Command(ctx, "/bin/sh", "-c", "hostname; test -x /usr/sbin/sshd && echo chrooted")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.Output(); err != nil || string(out) != "web1\nchrooted\n" {
		t.Errorf("Command in instance: %q %v", out, err)
	}
	if pids, err := insts[1].PIDs(); err != nil || len(pids) == 0 {
		t.Errorf("PIDs = %v %v", pids, err)
	}
	// Keys are per user: root's key does not open admin, admin's does not open root.
	if _, err := sshRun(t, insts[0], "admin", rootKey, "true"); err == nil {
		t.Errorf("root's key logged in as admin")
	}
	if _, err := sshRun(t, insts[0], "root", adminKey, "true"); err == nil {
		t.Errorf("admin's key logged in as root")
	}
	// sshd listens on the instance address only: the host side of the veth gets nothing.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(insts[0].HostAddr().String(), "22"), time.Second); err == nil {
		c.Close()
		t.Errorf("something answers on the host side %s:22", insts[0].HostAddr())
	}
	// A sweep for crashed runs leaves live instances alone.
	if err := Cleanup(Prefix); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if out, err := sshRun(t, insts[1], "root", rootKey, "echo alive"); err != nil || out != "alive\n" {
		t.Errorf("instance after Cleanup of dead runs: %q %v", out, err)
	}

	for _, inst := range insts {
		if err := inst.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if err := inst.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	}
	for _, inst := range insts {
		assertGone(t, inst.ID(), root) // both share root: check once both are stopped
	}
}

// assertGone checks that nothing of instance id remains: namespace, link, runtime
// directory, processes chrooted in root.
func assertGone(t *testing.T, id, root string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(netnsDir, id)); err == nil {
		t.Errorf("network namespace %s left behind", id)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil || strings.Contains(string(out), id) {
		t.Errorf("ip netns list still shows %s: %s %v", id, out, err)
	}
	if _, err := net.InterfaceByName(id); err == nil {
		t.Errorf("link %s left behind", id)
	}
	if _, err := os.Lstat(filepath.Join(StateDir, "inst", id)); err == nil {
		t.Errorf("runtime directory of %s left behind", id)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(id)) || (root != "" && bytes.Contains(mounts, []byte(root+"/"))) {
		t.Errorf("mounts of %s left behind", id)
	}
	if root != "" {
		if pids := processesIn(root); len(pids) > 0 {
			t.Errorf("processes %v still run in %s", pids, root)
		}
	}
}

// processesIn lists processes whose root directory is root.
func processesIn(root string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if r, err := os.Readlink("/proc/" + e.Name() + "/root"); err == nil && r == root {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestStartErrors(t *testing.T) {
	root := liteRoot(t)
	ctx := context.Background()
	if _, err := Start(ctx, Config{}); err == nil || !strings.Contains(err.Error(), "Root") {
		t.Errorf("empty root: %v", err)
	}
	if _, err := Start(ctx, Config{Root: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "sshd") {
		t.Errorf("root without sshd: %v", err)
	}
	inst, err := Start(ctx, Config{Root: root, Addr: mustAddr("169.254.127.250")})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	if inst.Addr().String() != "169.254.127.250" || inst.HostAddr().String() != "169.254.127.249" {
		t.Errorf("explicit address: instance %v host %v", inst.Addr(), inst.HostAddr())
	}
	if _, err := Start(ctx, Config{Root: root, Addr: mustAddr("169.254.127.249")}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second instance in the same /30: %v", err)
	}
	if _, err := Start(ctx, Config{Root: root, Addr: mustAddr("169.254.127.251")}); err == nil || !strings.Contains(err.Error(), "4n+1") {
		t.Errorf("broadcast address: %v", err)
	}
}

func TestMountImage(t *testing.T) {
	root := liteRoot(t)
	dir := t.TempDir()
	ctx := context.Background()
	key := newClientKey(t)

	// A whole-filesystem image and an MBR-partitioned one (filesystem at 1 MiB), both
	// filled from the lite root without mounting.
	whole := filepath.Join(dir, "whole.img")
	mkfs(t, whole, root, 64<<20, 0)
	parted := filepath.Join(dir, "parted.img")
	mkfs(t, parted, root, 65<<20, 1<<20)
	writeMBR(t, parted, 1<<20, 64<<20)

	for _, img := range []string{whole, parted} {
		mnt, unmount, err := MountImage(img)
		if err != nil {
			t.Fatalf("MountImage(%s): %v", img, err)
		}
		if _, err := os.Stat(filepath.Join(mnt, "usr/sbin/sshd")); err != nil {
			t.Errorf("%s: mounted tree lacks sshd: %v", img, err)
		}
		loop := loopOf(img)
		if loop == "" {
			t.Errorf("%s: no loop device backs the image", img)
		}
		inst, err := Start(ctx, Config{Root: mnt, AuthorizedKeys: map[string]string{"admin": key.line}})
		if err != nil {
			unmount()
			t.Fatalf("Start from image %s: %v", img, err)
		}
		if out, err := sshRun(t, inst, "admin", key, "echo from-image > /tmp/marker; sudo -n cat /etc/shadow | grep -c admin"); err != nil || out != "1\n" {
			t.Errorf("%s: ssh into the image: %q %v", img, out, err)
		}
		if err := inst.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if err := unmount(); err != nil {
			t.Fatalf("unmount: %v", err)
		}
		if err := unmount(); err != nil {
			t.Errorf("second unmount: %v", err)
		}
		if _, err := os.Stat(mnt); err == nil {
			t.Errorf("mount point %s left behind", mnt)
		}
		assertGone(t, inst.ID(), "")
		waitFor(t, "loop device detached from "+img, func() bool { return loopOf(img) == "" })
		// The instance wrote into the image itself.
		out, err := exec.Command("debugfs", "-R", "cat /tmp/marker", imageFS(img)).Output()
		if err != nil || !strings.Contains(string(out), "from-image") {
			t.Errorf("%s: marker not in the image: %q %v", img, out, err)
		}
	}

	junk := filepath.Join(dir, "junk.img")
	os.WriteFile(junk, make([]byte, 1<<20), 0o644)
	if _, _, err := MountImage(junk); err == nil || !strings.Contains(err.Error(), "no ext4") {
		t.Errorf("image without filesystem: %v", err)
	}
}

// mkfs makes an ext4 image of size bytes with the filesystem at offset, filled from tree.
func mkfs(t *testing.T, img, tree string, size, offset int64) {
	t.Helper()
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	args := []string{"-q", "-F", "-t", "ext4", "-d", tree}
	if offset > 0 {
		args = append(args, "-E", fmt.Sprintf("offset=%d", offset))
	}
	args = append(args, img, fmt.Sprintf("%dk", (size-offset)/1024))
	if out, err := exec.Command("mke2fs", args...).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v: %s", err, out)
	}
}

// writeMBR writes a one-partition (type 0x83) MBR.
func writeMBR(t *testing.T, img string, start, size int64) {
	t.Helper()
	mbr := make([]byte, 512)
	e := mbr[446:]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], uint32(start/512))
	binary.LittleEndian.PutUint32(e[12:], uint32(size/512))
	mbr[510], mbr[511] = 0x55, 0xaa
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
}

// imageFS returns a debugfs argument for img's filesystem.
func imageFS(img string) string {
	if strings.HasSuffix(img, "parted.img") {
		return img + "?offset=1048576"
	}
	return img
}

// loopOf returns the loop device backed by img, or "".
func loopOf(img string) string {
	ents, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range ents {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == img {
			return filepath.Base(filepath.Dir(filepath.Dir(p)))
		}
	}
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCleanupAfterCrash runs a child process that starts an instance and mounts an
// image, then dies by SIGKILL; Cleanup must sweep all of it.
func TestCleanupAfterCrash(t *testing.T) {
	root := liteRoot(t)
	img := filepath.Join(t.TempDir(), "crash.img")
	mkfs(t, img, t.TempDir(), 16<<20, 0)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ISIM_TEST_CRASH_HELPER=1", "ISIM_ROOT="+root, "ISIM_IMG="+img)
	out, err := cmd.Output()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("helper did not die by a signal: %v; output: %s", err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) != 2 {
		t.Fatalf("helper output: %q", out)
	}
	id, mnt := fields[0], fields[1]
	if _, err := os.Lstat(filepath.Join(netnsDir, id)); err != nil {
		t.Fatalf("the crashed run left no namespace to sweep (%v): the test proves nothing", err)
	}
	if loopOf(img) == "" {
		t.Fatalf("the crashed run left no mount to sweep")
	}
	if err := Cleanup(Prefix); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	assertGone(t, id, root)
	waitFor(t, "processes of the crashed instance to end", func() bool { return len(processesIn(root)) == 0 })
	if _, err := os.Stat(mnt); err == nil {
		t.Errorf("mount point %s left behind", mnt)
	}
	waitFor(t, "loop device of the crashed run to detach", func() bool { return loopOf(img) == "" })
	// The service address goes once no live process uses it.
	if ok, _ := addrAssigned(serviceAddr); ok {
		f, err := os.Open(filepath.Join(StateDir, "service.lock"))
		if err == nil {
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				t.Errorf("service address %s left on lo with no process using it", serviceAddr)
			}
			f.Close()
		}
	}
	runID := id[len(Prefix) : len(Prefix)+runIDLen]
	if _, err := os.Stat(filepath.Join(StateDir, "runs", runID+".lock")); err == nil {
		t.Errorf("run lock of the crashed run left behind")
	}
}

func crashHelper() {
	inst, err := Start(context.Background(), Config{Root: os.Getenv("ISIM_ROOT")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if _, err := ServiceAddr(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	mnt, _, err := MountImage(os.Getenv("ISIM_IMG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(inst.ID(), mnt)
	os.Stdout.Sync()
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestServiceAddr: a server on the service address answers the host and every
// instance; the instance reaches nothing else of the host.
func TestServiceAddr(t *testing.T) {
	root := liteRoot(t)
	ctx := context.Background()
	addr, err := ServiceAddr()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nservice"))
			c.Close()
		}
	}()
	defer ln.Close()
	url := "http://" + ln.Addr().String() + "/"
	insts := make([]*Instance, 2)
	for n := range insts {
		if insts[n], err = Start(ctx, Config{Root: root}); err != nil {
			t.Fatal(err)
		}
		defer insts[n].Stop()
	}
	for _, inst := range insts {
		cmd, err := inst.Command(ctx, "wget", "-q", "-O-", url)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := cmd.CombinedOutput(); err != nil || string(out) != "service" {
			t.Errorf("%s: GET %s: %q %v", inst.ID(), url, out, err)
		}
	}
	// Another instance's host side is not reachable: there is no route to it.
	other := insts[1].HostAddr().String()
	cmd, _ := insts[0].Command(ctx, "wget", "-q", "-O-", "http://"+other+":1/")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "unreachable") {
		t.Errorf("instance reached %s: %q %v", other, out, err)
	}
}
