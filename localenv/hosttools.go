//go:build linux

package localenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ImagingTools are host programs the base AMIs get on top of the lite root, because an
// EC2 instance has them and bundling a volume uses them (mke2fs for the image
// filesystem, mount for loop mounts, chattr/debugfs for attributes).
var ImagingTools = []string{"mke2fs", "mkfs.ext4", "e2fsck", "tune2fs", "debugfs", "chattr", "lsattr", "blkid", "mount", "umount", "losetup", "mkfs.xfs", "xfs_admin"}

// addHostTools copies the named programs (those the host has) into root at the same
// paths, with the shared libraries they need, replacing busybox's applets of the same
// name.
func addHostTools(root string, tools []string) error {
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			continue // e.g. no xfsprogs on this host
		}
		p, _ = filepath.Abs(p)
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return err
		}
		if err := copyIntoRoot(root, real); err != nil {
			return fmt.Errorf("adding %s to the instance root: %w", tool, err)
		}
		if real != p {
			// Keep the name the tool is called by (mkfs.ext4 -> mke2fs).
			dst := filepath.Join(root, p)
			os.Remove(dst)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(real, dst); err != nil {
				return err
			}
		}
		out, err := exec.Command("ldd", real).Output()
		if err != nil {
			continue // static
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			var lib string
			switch {
			case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
				lib = f[2]
			case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
				lib = f[0]
			default:
				continue
			}
			if _, err := os.Stat(filepath.Join(root, lib)); err == nil {
				continue
			}
			libReal, err := filepath.EvalSymlinks(lib)
			if err != nil {
				return err
			}
			if err := copyIntoRoot(root, libReal); err != nil {
				return err
			}
			if libReal != lib {
				dst := filepath.Join(root, lib)
				if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
					if err := os.Symlink(libReal, dst); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// copyIntoRoot copies the host file p to root+p, replacing a symlink there (a busybox
// applet) rather than writing through it.
func copyIntoRoot(root, p string) error {
	dst := filepath.Join(root, p)
	if fi, err := os.Lstat(dst); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if err := os.Remove(dst); err != nil {
			return err
		}
	} else if err == nil {
		return nil // already there
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	src, err := os.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
