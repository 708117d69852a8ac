package volume

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/fuzzcheck"
)

// FuzzParseMountInfo: the mountinfo parser never panics, costs a bounded allocation,
// and every table it accepts, written back the way the kernel writes it (octal
// escapes), parses to the same mounts. MountAt on any accepted table never panics
// and returns the mount of that (cleaned) point.
func FuzzParseMountInfo(f *testing.F) {
	f.Add([]byte("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n" +
		"23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n" +
		"40 22 0:35 / /mnt/with\\040space rw,relatime - tmpfs tmpfs rw,size=1024k\n" +
		"41 22 259:3 /sub /srv rw - xfs /dev/nvme0n1p3 rw,attr2,inode64\n"))
	f.Add([]byte("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"))
	f.Add([]byte("1 0 0:1 / / rw - rootfs rootfs\n\n"))
	f.Add([]byte("x 0 0:1 / / rw - ext4 /dev/x rw\n"))
	f.Add([]byte("1 0 0:1 / / rw ext4\n"))
	fuzzcheck.CapMinimize(time.Second)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		var mounts []Mount
		var err error
		fuzzcheck.Allocs(t, 256<<10+16*uint64(len(data)), func() { mounts, err = parseMountInfo(strings.NewReader(string(data))) })
		if err != nil {
			return
		}
		var b strings.Builder
		for _, m := range mounts {
			// A root, mount point or options field that is a lone "-" reads as the
			// separator; the kernel never writes one (paths start with /), so such a
			// table has no faithful rewrite.
			if m.Root == "-" || m.Point == "-" || m.Options == "-" {
				return
			}
		}
		for _, m := range mounts {
			super := ""
			if m.SuperOptions != "" {
				super = " " + m.SuperOptions
			}
			fmt.Fprintf(&b, "%d %d %d:%d %s %s %s - %s %s%s\n", m.ID, m.Parent, m.Major, m.Minor,
				escapeOctal(m.Root), escapeOctal(m.Point), m.Options, m.FSType, escapeOctal(m.Source), super)
		}
		again, err := parseMountInfo(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("our rewrite of an accepted table is refused: %v\n%s", err, b.String())
		}
		if len(again) != len(mounts) || len(mounts) > 0 && !reflect.DeepEqual(again, mounts) {
			t.Fatalf("mounts changed in a round trip:\n%+v\n%+v", mounts, again)
		}
		for _, m := range mounts {
			// MountAt cleans the path it is given: "/mnt/" is the mount of "/mnt".
			if got, err := MountAt(mounts, m.Point); err == nil && got.Point != filepath.Clean(m.Point) {
				t.Fatalf("MountAt(%q) returned the mount of %q", m.Point, got.Point)
			}
		}
	})
}

// escapeOctal escapes as the kernel's seq_path does (space, tab, newline, backslash),
// and every other byte that is not printable ASCII too, so that the line splits as
// the parser expects.
func escapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '\\' || c >= 0x7f {
			fmt.Fprintf(&b, "\\%03o", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
