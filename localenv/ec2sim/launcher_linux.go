package ec2sim

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	nsinstance "github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

// NamespaceLauncher runs each instance as sshd in network namespaces of its own
// (localenv/instance), on a private copy of the AMI's root: a copy of the tree for a
// seeded AMI, a sparse copy of the image file (loop-mounted) for a registered one. So
// instances never change their AMI, as on EC2.
type NamespaceLauncher struct {
	// WorkDir holds the per-instance copies; they are removed at termination.
	WorkDir string
	// Forward lists host loopback services ("127.0.0.1:PORT", e.g. the S3 endpoint)
	// that instances reach at the same address (see instance.Forwarder).
	Forward []string

	mu       sync.Mutex
	launched []Launched
}

// Launched names what one started instance made: its network namespace and its root
// (the mount point of a loop-mounted image, or a copied tree).
type Launched struct {
	InstanceID, NetNS, Root string
}

// Launched lists every instance this launcher started, terminated or not (for checks
// that nothing is left behind).
func (l *NamespaceLauncher) Launched() []Launched {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Launched(nil), l.launched...)
}

type nsInstance struct {
	inst    *nsinstance.Instance
	unmount func() error
	copyDir string
	fw      *nsinstance.Forwarder

	diskMu sync.Mutex
	disks  []nsDisk // non-root volumes as loop devices (ns_volumes_linux.go)
}

func (n *nsInstance) PrivateIP() string { return n.inst.Addr().String() }

func (n *nsInstance) Terminate(ctx context.Context) error {
	var errs []error
	if n.fw != nil {
		if err := n.fw.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.inst.Stop(); err != nil {
		errs = append(errs, err)
	}
	if err := n.dropDisks(); err != nil {
		errs = append(errs, err)
	}
	if n.unmount != nil {
		if err := n.unmount(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(n.copyDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Launch copies the root, mounts it when it is an image, and starts sshd with the key
// pair's public key authorized for every login user. An EBS-backed instance runs on
// its root volume's file itself, mounted in place (no copy: what it writes stays in
// the volume); its other volumes appear in its /dev as block nodes of loop devices
// (nvme1n1... on Nitro types, xvdf... otherwise).
func (l *NamespaceLauncher) Launch(ctx context.Context, spec LaunchSpec) (_ Instance, err error) {
	copyDir := filepath.Join(l.WorkDir, spec.InstanceID)
	if err := os.MkdirAll(copyDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating instance directory: %w", err)
	}
	n := &nsInstance{copyDir: copyDir}
	defer func() {
		if err != nil {
			if n.unmount != nil {
				n.unmount()
			}
			os.RemoveAll(copyDir)
		}
	}()
	var root string
	var rootVol *Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Root {
			rootVol = &spec.Volumes[i]
		}
	}
	switch {
	case rootVol != nil:
		dir, unmount, err := nsinstance.MountImage(rootVol.Path)
		if err != nil {
			return nil, fmt.Errorf("mounting the root volume %s: %w", rootVol.VolumeID, err)
		}
		root, n.unmount = dir, unmount
	case spec.Root.Image != "":
		img := filepath.Join(copyDir, "root.img")
		if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", spec.Root.Image, img).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("copying AMI image %s: %v: %s", spec.Root.Image, err, out)
		}
		dir, unmount, err := nsinstance.MountImage(img)
		if err != nil {
			return nil, err
		}
		root, n.unmount = dir, unmount
	case spec.Root.Dir != "":
		root = filepath.Join(copyDir, "root")
		if out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", spec.Root.Dir, root).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("copying AMI root %s: %v: %s", spec.Root.Dir, err, out)
		}
	default:
		return nil, errors.New("the AMI has no root to run from")
	}
	keys := map[string]string{}
	if spec.AuthorizedKey != "" {
		for _, u := range spec.LoginUsers {
			keys[u] = spec.AuthorizedKey
		}
	}
	cfg := nsinstance.Config{Root: root, AuthorizedKeys: keys, Name: spec.InstanceID}
	if a, perr := netip.ParseAddr(spec.PrivateIP); perr == nil {
		cfg.Addr = a // the address it had before a stop
	}
	inst, err := nsinstance.Start(ctx, cfg)
	if err != nil && cfg.Addr.IsValid() {
		cfg.Addr = netip.Addr{} // taken meanwhile: any free one
		inst, err = nsinstance.Start(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.InstanceID, err)
	}
	n.inst = inst
	if err := addLoopDevices(inst.NetNS()); err != nil {
		inst.Stop()
		return nil, err
	}
	for _, v := range spec.Volumes {
		if v.Root {
			continue
		}
		if err := n.attachDisk(ctx, v); err != nil {
			inst.Stop()
			n.dropDisks()
			return nil, err
		}
	}
	l.mu.Lock()
	l.launched = append(l.launched, Launched{InstanceID: spec.InstanceID, NetNS: inst.NetNS(), Root: root})
	l.mu.Unlock()
	if len(l.Forward) > 0 {
		if n.fw, err = nsinstance.StartForwarder(inst.NetNS(), l.Forward); err != nil {
			inst.Stop()
			return nil, err
		}
	}
	return n, nil
}
