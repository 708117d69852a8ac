package volume

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// stampBootArea writes known bytes where a BIOS boot loader lives: the MBR boot code
// (440 bytes) and the given sector ranges (the post-table gap, a BIOS boot partition).
// It returns the bytes written per range start.
func stampBootArea(t *testing.T, disk string, ranges ...[2]int64) map[int64][]byte {
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	rnd := rand.New(rand.NewSource(42))
	out := map[int64][]byte{}
	code := make([]byte, 440)
	rnd.Read(code)
	_, err = f.WriteAt(code, 0)
	must(t, err)
	out[0] = code
	for _, r := range ranges {
		b := make([]byte, (r[1]-r[0])*512)
		rnd.Read(b)
		// a zero stretch in the middle, as real boot gaps have
		clear(b[len(b)/2 : len(b)/2+4096])
		_, err = f.WriteAt(b, r[0]*512)
		must(t, err)
		out[r[0]*512] = b
	}
	return out
}

func readAt(t *testing.T, file string, off, n int64) []byte {
	f, err := os.Open(file)
	must(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	must(t, err)
	return b
}

type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdiskJSON(t *testing.T, file string) sfdiskTable {
	var tab sfdiskTable
	must(t, json.Unmarshal([]byte(run(t, "sfdisk", "-J", file)), &tab))
	return tab
}

// buildPartitioned makes a source disk with the table script, a root filesystem in
// partition part, known boot bytes, and images it.
func buildPartitioned(t *testing.T, table string, part int, start, fsMiB int64, boot [][2]int64) (disk string, img *Image, stamps map[int64][]byte, warnings []string) {
	testroot.Require(t)
	disk = filepath.Join(t.TempDir(), "disk.img")
	must(t, os.WriteFile(disk, nil, 0o600))
	must(t, os.Truncate(disk, 160<<20))
	cmd := "sfdisk"
	if strings.HasPrefix(table, "sgdisk ") {
		args := strings.Fields(table)[1:]
		run(t, "sgdisk", append(args, disk)...)
	} else {
		c := strings.NewReader(table)
		out, err := runStdin(c, cmd, "-q", disk)
		if err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
	}
	stamps = stampBootArea(t, disk, boot...)
	src := newTestFS(t, disk, start*512, fsMiB<<20, "mkfs.ext4", "-q", "-L", "part-root")
	writeFile(t, filepath.Join(src.Dir, "etc/hostname"), []byte("hvm\n"), 0o644)
	writeFile(t, filepath.Join(src.Dir, ".dot"), []byte("x"), 0o600)
	var log bytes.Buffer
	var err error
	img, err = Build(context.Background(), Config{
		PlanConfig: PlanConfig{Volume: src.Dir, Scratch: t.TempDir()},
		Log:        &log,
		Warn:       func(m string) { warnings = append(warnings, m) },
		sourceDisk: &SourceDisk{Path: disk, PartNumber: part, Start: start},
	})
	t.Logf("build log:\n%s", log.String())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { img.Remove() })
	if img.Layout == nil || img.FSOffset != start*512 {
		t.Fatalf("image has no partition layout or the filesystem at %d, want %d", img.FSOffset, start*512)
	}
	// The filesystem inside is whole and the same.
	got := walkTree(t, mountImage(t, img), nil, nil)
	want := walkTree(t, src.Dir, nil, nil)
	compareTrees(t, want, got, nil)
	l, err := AttachLoop(img.Path, img.FSOffset, img.Size-img.FSOffset-img.Layout.Overhead())
	must(t, err)
	defer l.Detach()
	run(t, "e2fsck", "-fn", l.Path)
	info, err := ReadFSInfo(l.Path)
	must(t, err)
	srcInfo, err := ReadFSInfo(src.Dev)
	must(t, err)
	if info.UUID != srcInfo.UUID || info.Label != "part-root" {
		t.Errorf("filesystem in the image: label %q UUID %s; source UUID %s", info.Label, info.UUIDString(), srcInfo.UUIDString())
	}
	return disk, img, stamps, warnings
}

func checkStamps(t *testing.T, img string, stamps map[int64][]byte) {
	for off, want := range stamps {
		if got := readAt(t, img, off, int64(len(want))); !bytes.Equal(got, want) {
			t.Errorf("boot area at byte %d (%d bytes) not kept", off, len(want))
		}
	}
}

func TestBuildMBRDisk(t *testing.T) {
	table := "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=204800, type=83, bootable\nstart=206848, size=16384, type=82\n"
	disk, img, stamps, warnings := buildPartitioned(t, table, 1, 2048, 100, [][2]int64{{1, 2048}})
	checkStamps(t, img.Path, stamps)
	src, got := sfdiskJSON(t, disk), sfdiskJSON(t, img.Path)
	if got.PartitionTable.Label != "dos" || got.PartitionTable.ID != src.PartitionTable.ID {
		t.Errorf("image table %s id %s, source dos id %s", got.PartitionTable.Label, got.PartitionTable.ID, src.PartitionTable.ID)
	}
	if len(got.PartitionTable.Partitions) != 1 {
		t.Fatalf("image partitions: %+v, want only the root", got.PartitionTable.Partitions)
	}
	p := got.PartitionTable.Partitions[0]
	if p.Start != 2048 || p.Size != 204800 || p.Type != "83" || !p.Bootable || !strings.HasSuffix(p.Node, "1") {
		t.Errorf("root partition %+v, want partition 1 at 2048, 204800 sectors, type 83, bootable", p)
	}
	if img.Size != 101<<20 {
		t.Errorf("image size %d, want 101 MiB", img.Size)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "partition 2 (type 0x82)") {
		t.Errorf("warnings %q, want one about the dropped swap partition", warnings)
	}
	run(t, "fdisk", "-l", img.Path)
}

func TestBuildGPTDiskWithBIOSBoot(t *testing.T) {
	table := "sgdisk -U 11111111-2222-3333-4444-555555555555 -n 1:2048:4095 -t 1:EF02 -c 1:bios -n 2:4096:+100M -t 2:8300 -c 2:rootfs -u 2:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee -n 3:0:+8M -t 3:8200"
	disk, img, stamps, warnings := buildPartitioned(t, table, 2, 4096, 100, [][2]int64{{34, 2048}, {2048, 4096}})
	checkStamps(t, img.Path, stamps)
	if out := run(t, "sgdisk", "-v", img.Path); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v on the image:\n%s", out)
	}
	src, got := sfdiskJSON(t, disk), sfdiskJSON(t, img.Path)
	if got.PartitionTable.Label != "gpt" || got.PartitionTable.ID != src.PartitionTable.ID {
		t.Errorf("image table %s id %s, source gpt id %s", got.PartitionTable.Label, got.PartitionTable.ID, src.PartitionTable.ID)
	}
	if len(got.PartitionTable.Partitions) != 2 {
		t.Fatalf("image partitions: %+v, want BIOS boot and root", got.PartitionTable.Partitions)
	}
	for i, p := range got.PartitionTable.Partitions {
		s := src.PartitionTable.Partitions[i]
		if p.Start != s.Start || p.Size != s.Size || p.Type != s.Type || p.UUID != s.UUID || p.Name != s.Name || p.Node[len(p.Node)-1] != s.Node[len(s.Node)-1] {
			t.Errorf("partition %d: image %+v, source %+v", i+1, p, s)
		}
	}
	// root start + 100 MiB + backup GPT (33 sectors), rounded up to a MiB
	if img.Size != 103<<20 {
		t.Errorf("image size %d MiB, want 103", img.Size>>20)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "partition 3") {
		t.Errorf("warnings %q, want one about the dropped swap partition", warnings)
	}
	run(t, "fdisk", "-l", img.Path)
}
