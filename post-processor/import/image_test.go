package importpp

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func header(size int, puts map[int]string) []byte {
	b := make([]byte, size)
	for off, s := range puts {
		copy(b[off:], s)
	}
	return b
}

func TestSniff(t *testing.T) {
	mbr := header(4096, map[int]string{446 + 4: "\x83", 446 + 12: "\x00\x08\x00\x00", 510: "\x55\xaa"})
	for name, tc := range map[string]struct {
		data []byte
		kind imageKind
	}{
		"ext4":        {header(4096, map[int]string{1080: "\x53\xef"}), kindFilesystem},
		"xfs":         {header(4096, map[int]string{0: "XFSB"}), kindFilesystem},
		"mbr":         {mbr, kindDisk},
		"gpt":         {header(4096, map[int]string{510: "\x55\xaa", 512: "EFI PART"}), kindDisk},
		"empty mbr":   {header(4096, map[int]string{510: "\x55\xaa"}), kindUnknown},
		"qcow2":       {header(4096, map[int]string{0: "QFI\xfb"}), kindQcow2},
		"vmdk":        {header(4096, map[int]string{0: "KDMV"}), kindVMDK},
		"zeros":       {make([]byte, 100), kindUnknown},
		"short image": {[]byte("x"), kindUnknown},
	} {
		got, _, err := sniff(bytes.NewReader(tc.data))
		if err != nil || got != tc.kind {
			t.Errorf("%s: sniff = %v, %v; want %v", name, got, err, tc.kind)
		}
	}
}

func TestInspectImage(t *testing.T) {
	dir := t.TempDir()
	fs := filepath.Join(dir, "root.img")
	os.WriteFile(fs, header(4096, map[int]string{1080: "\x53\xef"}), 0o644)
	disk := filepath.Join(dir, "disk.raw")
	os.WriteFile(disk, header(4096, map[int]string{446 + 4: "\x83", 446 + 12: "\x00\x08", 510: "\x55\xaa"}), 0o644)
	for _, tc := range []struct {
		path, virt, kernel, want, err string
	}{
		{fs, "", "aki-12345678", "paravirtual", ""},
		{fs, "", "", "", "set ami_kernel_id"},
		{fs, "hvm", "", "", "ami_virtualization_type hvm"},
		{disk, "", "", "hvm", ""},
		{disk, "paravirtual", "aki-1", "", "ami_virtualization_type paravirtual"},
		{disk, "", "aki-1", "", "remove ami_kernel_id"},
		{filepath.Join(dir, "missing.raw"), "", "", "", "no such file"},
	} {
		info, err := inspectImage(tc.path, tc.virt, tc.kernel)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s %q: error %v, want one saying %q", filepath.Base(tc.path), tc.virt, err, tc.err)
		case tc.err == "" && (err != nil || info.Virtualization != tc.want):
			t.Errorf("%s %q: %+v, %v; want %s", filepath.Base(tc.path), tc.virt, info, err, tc.want)
		}
	}
}

func TestChooseImage(t *testing.T) {
	if got, err := chooseImage("", []string{"a.txt", "out/disk.RAW", "b.img"}); err != nil || got != "out/disk.RAW" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := chooseImage("", []string{"disk.qcow2"}); err == nil || !strings.Contains(err.Error(), "qemu-img convert -O raw disk.qcow2 disk.raw") {
		t.Errorf("qcow2: %v", err)
	}
	if _, err := chooseImage("", nil); err == nil || !strings.Contains(err.Error(), "image_path") {
		t.Errorf("no files: %v", err)
	}
	if got, _ := chooseImage("x.bin", []string{"disk.raw"}); got != "x.bin" {
		t.Errorf("image_path not preferred: %q", got)
	}
}
