package instance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Config describes one instance.
type Config struct {
	// Root is the instance's root filesystem: a directory tree (BuildLiteRoot) or a
	// mounted image (MountImage). It needs /usr/sbin/sshd and the users named in
	// AuthorizedKeys. Several instances may share one Root: everything per instance
	// (sshd config, host key, authorized keys, /run, /dev, /proc) lives in the
	// instance's own mount namespace.
	Root string
	// Addr is the instance's IPv4 address, the first or second usable address of a
	// /30 whose other address the host side takes. The zero Addr picks a free /30 in
	// 169.254.64.0/18.
	Addr netip.Addr
	// AuthorizedKeys maps a login user to its authorized_keys content (one or more
	// lines). The keys are served from the instance's /run, in addition to the
	// user's own ~/.ssh/authorized_keys.
	AuthorizedKeys map[string]string
	// Name is the instance's hostname; empty means its generated ID.
	Name string
}

// Instance is a running sshd in namespaces of its own. Stop it to remove everything
// it made.
type Instance struct {
	id       string
	name     string
	root     string
	runDir   string // host directory bind-mounted on the instance's /run
	net      *Network
	lease    *addrLease // net's
	hostKey  ssh.PublicKey
	cmd      *exec.Cmd
	exited   chan struct{}
	log      *TailBuffer
	stopOnce sync.Once
	stopErr  error
}

// ID is the instance's unique name: its network namespace and host-side veth link.
func (i *Instance) ID() string { return i.id }

// Name is the instance's hostname.
func (i *Instance) Name() string { return i.name }

// Root is the root filesystem the instance runs from.
func (i *Instance) Root() string { return i.root }

// Addr is the instance's address, reachable from the host's network namespace.
func (i *Instance) Addr() netip.Addr { return i.lease.inst }

// HostAddr is the host side of the instance's veth pair: the one address of the host
// the instance can reach (servers the instance must call, such as an S3 endpoint,
// listen on it).
func (i *Instance) HostAddr() netip.Addr { return i.lease.host }

// SSHAddr is "addr:22", for ssh.Dial.
func (i *Instance) SSHAddr() string { return netip.AddrPortFrom(i.lease.inst, 22).String() }

// HostKey is the instance's SSH host key, generated for this instance.
func (i *Instance) HostKey() ssh.PublicKey { return i.hostKey }

// NetNS is the instance's network namespace name (for `ip netns exec`).
func (i *Instance) NetNS() string { return i.id }

// Log returns what sshd wrote to its stderr so far.
func (i *Instance) Log() string { return i.log.String() }

// Done is closed when sshd has exited (after Stop, or by itself).
func (i *Instance) Done() <-chan struct{} { return i.exited }

// sshdTimeout bounds the wait for sshd's banner.
const sshdTimeout = 30 * time.Second

// Start creates the network namespace and veth pair, starts sshd chrooted in Root and
// returns once sshd answers with its banner on Addr():22. The instance's processes die
// with the process that started it (do not call Start from a goroutine that locked
// its OS thread and then exits); what remains of it then is swept by Cleanup.
func Start(ctx context.Context, cfg Config) (inst *Instance, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("starting an instance needs root (network namespaces, mounts, chroot)")
	}
	if cfg.Root == "" {
		return nil, errors.New("instance Config.Root is empty: give a root tree (BuildLiteRoot) or a mounted image (MountImage)")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/sshd")); err != nil {
		return nil, fmt.Errorf("instance root %s has no usr/sbin/sshd: %w", root, err)
	}
	for _, tool := range []string{"ip", "unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("starting an instance needs %q on the host (Debian packages iproute2, util-linux, mount, coreutils): %w", tool, err)
		}
	}
	nw, err := NewNetwork(ctx, cfg.Addr)
	if err != nil {
		return nil, err
	}
	id := nw.Name()
	inst = &Instance{
		id:     id,
		name:   cfg.Name,
		root:   root,
		runDir: filepath.Join(StateDir, "inst", id),
		net:    nw,
		lease:  nw.lease,
		exited: make(chan struct{}),
		log:    NewTailBuffer(64 << 10),
	}
	if inst.name == "" {
		inst.name = id
	}
	defer func() {
		if err != nil {
			inst.Stop()
			inst = nil
		}
	}()
	if err := inst.writeRunDir(cfg.AuthorizedKeys); err != nil {
		return nil, err
	}
	if err := inst.startSSHD(); err != nil {
		return nil, err
	}
	if err := inst.waitBanner(ctx); err != nil {
		return nil, err
	}
	return inst, nil
}

// writeRunDir fills the directory that becomes the instance's /run: sshd's privilege
// separation directory, its config, the instance host key and the authorized keys.
func (i *Instance) writeRunDir(keys map[string]string) error {
	d := filepath.Join(i.runDir, "instance")
	for _, dir := range []string{filepath.Join(i.runDir, "sshd"), filepath.Join(d, "authorized_keys")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating instance runtime directory: %w", err)
		}
	}
	// MkdirAll honours the umask; sshd insists on exact, non-writable modes.
	for _, dir := range []string{i.runDir, filepath.Join(i.runDir, "sshd"), d, filepath.Join(d, "authorized_keys")} {
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return fmt.Errorf("encoding host key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d, "ssh_host_ed25519_key"), pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	if i.hostKey, err = ssh.NewPublicKey(pub); err != nil {
		return err
	}
	users := make([]string, 0, len(keys))
	for u := range keys {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		if u == "" || strings.ContainsAny(u, "/\x00") || u == "." || u == ".." {
			return fmt.Errorf("instance AuthorizedKeys: invalid user name %q", u)
		}
		k := strings.TrimSpace(keys[u]) + "\n"
		if err := os.WriteFile(filepath.Join(d, "authorized_keys", u), []byte(k), 0o644); err != nil {
			return fmt.Errorf("writing authorized keys for %s: %w", u, err)
		}
	}
	// The instance's own /etc/hosts and /etc/hostname are bind-mounted over the
	// root's (which instances may share): sudo wants its hostname to resolve.
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\t%s\n", i.lease.inst, i.name)
	if err := os.WriteFile(filepath.Join(d, "hosts"), []byte(hosts), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d, "hostname"), []byte(i.name+"\n"), 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf(sshdConfig, i.SSHAddr())
	return os.WriteFile(filepath.Join(d, "sshd_config"), []byte(conf), 0o644)
}

// sshdConfig listens on the instance address only and accepts public keys only.
const sshdConfig = `# Written by localenv/instance for this instance only.
ListenAddress %s
HostKey /run/instance/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /run/instance/authorized_keys/%%u .ssh/authorized_keys
StrictModes yes
UseDNS no
X11Forwarding no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp /usr/lib/openssh/sftp-server
`

// instanceScript runs in the instance's fresh mount, PID and UTS namespaces, as PID 1,
// before it becomes sshd: it mounts what the instance sees of the kernel and its own
// /run, then chroots. Arguments: root, host run directory, hostname.
const instanceScript = `set -e
R="$1"
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
mkdir -m 755 "$R/dev/pts"
mkdir -m 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount --bind "$2" "$R/run"
for f in hosts hostname; do
	if [ -f "$R/etc/$f" ] && [ ! -L "$R/etc/$f" ]; then mount --bind "$2/instance/$f" "$R/etc/$f"; fi
done
hostname "$3"
exec chroot "$R" /usr/sbin/sshd -D -e -f /run/instance/sshd_config
`

func (i *Instance) startSSHD() error {
	for _, d := range []string{"proc", "dev", "run"} {
		p := filepath.Join(i.root, d)
		if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
			return fmt.Errorf("instance root: %s is not a directory", p)
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("instance root: %w", err)
		}
	}
	// ip netns exec enters the namespace and execs unshare, which stays the parent of
	// the namespace's PID 1; --kill-child makes PID 1 (and so every process of the
	// instance) die with it.
	i.cmd = exec.Command("ip", "netns", "exec", i.id,
		"unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child=SIGKILL",
		"/bin/sh", "-c", instanceScript, "sh", i.root, i.runDir, i.name)
	i.cmd.Stdout = i.log
	i.cmd.Stderr = i.log
	// If the test process dies, take the instance with it.
	i.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := i.cmd.Start(); err != nil {
		i.cmd = nil
		return fmt.Errorf("starting sshd for instance %s: %w", i.id, err)
	}
	go func() {
		i.cmd.Wait()
		close(i.exited)
	}()
	return nil
}

// waitBanner waits until sshd answers on the instance address with its version line.
func (i *Instance) waitBanner(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sshdTimeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-i.exited:
			return fmt.Errorf("sshd of instance %s exited before answering: %s", i.id, i.log.String())
		case <-ctx.Done():
			return fmt.Errorf("sshd of instance %s did not answer on %s: %v (last error: %v); sshd log: %s", i.id, i.SSHAddr(), ctx.Err(), lastErr, i.log.String())
		default:
		}
		if lastErr = probeBanner(ctx, i.SSHAddr()); lastErr == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func probeBanner(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// Stop kills sshd and every process of the instance, deletes the namespace and the
// veth pair, and removes the runtime directory. It is idempotent; after it nothing of
// the instance remains.
func (i *Instance) Stop() error {
	i.stopOnce.Do(func() { i.stopErr = i.stop() })
	return i.stopErr
}

func (i *Instance) stop() error {
	var errs []error
	if i.cmd != nil {
		i.cmd.Process.Kill()
		select {
		case <-i.exited:
		case <-time.After(30 * time.Second):
			errs = append(errs, fmt.Errorf("instance %s: unshare did not exit", i.id))
		}
	}
	if err := i.net.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(i.runDir); err != nil {
		errs = append(errs, fmt.Errorf("removing instance runtime directory: %w", err))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// TailBuffer keeps the last max bytes written to it (a process's log, for errors);
// the VM launcher keeps qemu's stderr in one too.
type TailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

// NewTailBuffer returns a TailBuffer that keeps max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

func (b *TailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *TailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// PIDs lists the host PIDs of the instance's processes (sshd and its sessions), for
// tests that inspect them through the host's /proc.
func (i *Instance) PIDs() ([]int, error) { return netNSPIDs(i.id) }

// Command returns a command that runs inside the instance (its namespaces and root,
// as root), like a console: nsenter into the instance's first process.
func (i *Instance) Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	pid, err := i.initPID()
	if err != nil {
		return nil, err
	}
	nsArgs := []string{"--target", fmt.Sprint(pid), "--mount", "--uts", "--net", "--pid", "--root", "--wd=/", "--", name}
	return exec.CommandContext(ctx, "nsenter", append(nsArgs, args...)...), nil
}

// initPID is the host PID of the instance's PID 1 (sshd): the only child of unshare.
func (i *Instance) initPID() (int, error) {
	if i.cmd == nil || i.cmd.Process == nil {
		return 0, fmt.Errorf("instance %s is not running", i.id)
	}
	select {
	case <-i.exited:
		return 0, fmt.Errorf("instance %s has stopped", i.id)
	default:
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", i.cmd.Process.Pid, i.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("instance %s: finding its first process: %w", i.id, err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		return 0, fmt.Errorf("instance %s: no first process", i.id)
	}
	return pid, nil
}
