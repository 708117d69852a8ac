package volume

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	ID, Parent   int
	Major, Minor uint32
	Root         string // path inside the filesystem that is mounted
	Point        string // mount point
	Options      string // per-mount options
	FSType       string
	Source       string
	SuperOptions string
}

// ReadMounts parses /proc/self/mountinfo.
func ReadMounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	return parseMountInfo(f)
}

func parseMountInfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 2 {
			return nil, fmt.Errorf("mountinfo line %d: unexpected format %q", n, line)
		}
		var m Mount
		var err1, err2 error
		m.ID, err1 = strconv.Atoi(f[0])
		m.Parent, err2 = strconv.Atoi(f[1])
		maj, min, ok2 := strings.Cut(f[2], ":")
		ma, err3 := strconv.ParseUint(maj, 10, 32)
		mi, err4 := strconv.ParseUint(min, 10, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || !ok2 {
			return nil, fmt.Errorf("mountinfo line %d: unexpected format %q", n, line)
		}
		m.Major, m.Minor = uint32(ma), uint32(mi)
		m.Root = unescapeOctal(f[3])
		m.Point = unescapeOctal(f[4])
		m.Options = f[5]
		m.FSType = g[0]
		m.Source = unescapeOctal(g[1])
		if len(g) > 2 {
			m.SuperOptions = g[2]
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	return out, nil
}

// unescapeOctal undoes the \040-style escapes the kernel puts in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountAt returns the mount that is visible at dir (the last one mounted on it). dir
// must be a mount point: bundling a directory that is not one would silently mean "the
// filesystem that happens to contain it".
func MountAt(mounts []Mount, dir string) (Mount, error) {
	dir = filepath.Clean(dir)
	found := -1
	for i, m := range mounts {
		if m.Point == dir {
			found = i
		}
	}
	if found < 0 {
		return Mount{}, fmt.Errorf("%s is not a mount point: the volume must be the mount point of the filesystem to bundle (see /proc/self/mountinfo)", dir)
	}
	return mounts[found], nil
}

// pseudoFS lists filesystem types that hold no data of their own (kernel views, memory
// file systems) and network filesystems: never copied into an image.
var pseudoFS = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "devpts": true, "tmpfs": true,
	"ramfs": true, "cgroup": true, "cgroup2": true, "pstore": true, "securityfs": true,
	"debugfs": true, "tracefs": true, "configfs": true, "fusectl": true, "mqueue": true,
	"hugetlbfs": true, "bpf": true, "binfmt_misc": true, "autofs": true, "rpc_pipefs": true,
	"nfsd": true, "efivarfs": true, "selinuxfs": true, "overlay": true, "squashfs": true,
	"nfs": true, "nfs4": true, "cifs": true, "smb3": true, "smbfs": true, "9p": true,
	"fuse": true, "fuse.sshfs": true, "fuse.lxcfs": true, "fuse.gvfsd-fuse": true,
	"ceph": true, "glusterfs": true, "afs": true, "virtiofs": true, "nsfs": true,
}

// IsPseudoFS reports whether fstype is a pseudo, memory or network filesystem.
func IsPseudoFS(fstype string) bool {
	return pseudoFS[fstype] || strings.HasPrefix(fstype, "fuse.")
}
