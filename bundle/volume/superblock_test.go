package volume

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadFSInfoExt checks the superblock reader against dumpe2fs on filesystems made
// in plain files (no root needed), and that mke2fs with the derived arguments makes
// the same filesystem again.
func TestReadFSInfoExt(t *testing.T) {
	for _, c := range []struct{ name, typ string }{{"ext4", "ext4"}, {"ext3", "ext3"}, {"ext2", "ext2"}} {
		t.Run(c.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "fs")
			run(t, "mke2fs", "-q", "-F", "-t", c.typ, "-L", "lbl-"+c.name, f, "32M")
			fi, err := ReadFSInfo(f)
			if err != nil {
				t.Fatal(err)
			}
			dump := run(t, "dumpe2fs", "-h", f)
			field := func(name string) string {
				m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*(.*)$`).FindStringSubmatch(dump)
				if m == nil {
					t.Fatalf("dumpe2fs has no %q", name)
				}
				return strings.TrimSpace(m[1])
			}
			if fi.Type != c.typ || fi.Label != field("Filesystem volume name") || fi.UUIDString() != field("Filesystem UUID") ||
				strings.Join(fi.ExtFeatures, " ") != field("Filesystem features") {
				t.Errorf("ReadFSInfo: %s %q %s [%s]\ndumpe2fs: %q %s [%s]", fi.Type, fi.Label, fi.UUIDString(), strings.Join(fi.ExtFeatures, " "),
					field("Filesystem volume name"), field("Filesystem UUID"), field("Filesystem features"))
			}
			// mkfs again from what was read: same features, label and UUID.
			g := filepath.Join(t.TempDir(), "copy")
			must(t, os.WriteFile(g, nil, 0o600))
			must(t, os.Truncate(g, 48<<20))
			cmd, err := MkfsCommand(context.Background(), fi, g, 48<<20)
			must(t, err)
			must(t, runMkfs(cmd))
			gi, err := ReadFSInfo(g)
			must(t, err)
			if !slices.Equal(gi.ExtFeatures, fi.ExtFeatures) || gi.UUID != fi.UUID || gi.Label != fi.Label || gi.Type != fi.Type || gi.InodeSize != fi.InodeSize || gi.Size != 48<<20 {
				t.Errorf("remade filesystem differs:\n got  %+v\n want %+v", gi, fi)
			}
		})
	}
}

func TestReadFSInfoXFS(t *testing.T) {
	if _, err := exec.LookPath("mkfs.xfs"); err != nil && os.Getenv("INSTANCESTORE_CI") == "" {
		t.Skip("mkfs.xfs not installed (xfsprogs)")
	}
	f := filepath.Join(t.TempDir(), "fs")
	must(t, os.WriteFile(f, nil, 0o600))
	must(t, os.Truncate(f, 320<<20))
	run(t, "mkfs.xfs", "-q", "-L", "xlabel", "-m", "reflink=0", f)
	fi, err := ReadFSInfo(f)
	must(t, err)
	uuid := strings.TrimSpace(strings.TrimPrefix(run(t, "xfs_admin", "-u", f), "UUID ="))
	if fi.Type != "xfs" || fi.Label != "xlabel" || fi.UUIDString() != uuid || fi.XFS.Reflink || !fi.XFS.CRC || !fi.XFS.FInobt {
		t.Errorf("ReadFSInfo: %+v (xfs_admin UUID %s)", fi, uuid)
	}
	g := filepath.Join(t.TempDir(), "copy")
	must(t, os.WriteFile(g, nil, 0o600))
	must(t, os.Truncate(g, 320<<20))
	cmd, err := MkfsCommand(context.Background(), fi, g, 320<<20)
	must(t, err)
	must(t, runMkfs(cmd))
	gi, err := ReadFSInfo(g)
	must(t, err)
	if gi.XFS != fi.XFS || gi.UUID != fi.UUID || gi.Label != fi.Label {
		t.Errorf("remade xfs differs:\n got  %+v\n want %+v", gi, fi)
	}
}

func TestReadFSInfoUnknown(t *testing.T) {
	f := filepath.Join(t.TempDir(), "zeros")
	must(t, os.WriteFile(f, make([]byte, 4096), 0o600))
	if _, err := ReadFSInfo(f); err == nil || !strings.Contains(err.Error(), "only ext2/3/4 and xfs") {
		t.Errorf("error %v", err)
	}
}
