package volume

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/fuzzcheck"
)

// Sizes of FuzzReadLayout's disks: the source disk and the image written from it.
const (
	fuzzDiskSectors  = 2048
	fuzzImageSectors = 4096
)

// FuzzReadLayout: the MBR and GPT reader never panics and never allocates much on any
// disk; a table it accepts can be written into an image without a write outside it,
// and the table written reads back as the same layout (table, root slot and start,
// BIOS boot partition). With fix set the harness repairs the GPT CRCs first, so that
// the fuzzer gets past them to the fields they guard.
func FuzzReadLayout(f *testing.F) {
	dir := f.TempDir()
	for i, table := range []string{PartitionMBR, PartitionGPT} {
		p := filepath.Join(dir, fmt.Sprintf("seed%d", i))
		l := FreshLayout(table)
		l.RootStart = 64
		img, err := os.Create(p)
		if err != nil {
			f.Fatal(err)
		}
		if err := img.Truncate(fuzzDiskSectors * sectorSize); err != nil {
			f.Fatal(err)
		}
		if err := l.WriteTable(img, fuzzDiskSectors, fuzzDiskSectors-64-l.Overhead()/sectorSize-1); err != nil {
			f.Fatal(err)
		}
		img.Close()
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:34*sectorSize], uint8(1), false)
		f.Add(b[:34*sectorSize], uint8(2), true)
	}
	fuzzcheck.CapMinimize(time.Second)
	disk := filepath.Join(dir, "disk")
	out := filepath.Join(dir, "image")
	f.Fuzz(func(t *testing.T, data []byte, part uint8, fix bool) {
		if len(data) > 64<<10 {
			return
		}
		data = append([]byte(nil), data...)
		if fix {
			fixGPT(data)
		}
		src := &SourceDisk{Path: disk, PartNumber: int(part), Start: tableStart(data, int(part))}
		writeDisk(t, disk, data, fuzzDiskSectors*sectorSize)
		var l *DiskLayout
		var err error
		fuzzcheck.Allocs(t, 256<<10+2*uint64(len(data)), func() { l, err = ReadLayout(src) })
		if err != nil {
			return
		}
		if l.RootStart != src.Start || l.RootIndex != src.PartNumber-1 || l.Table != PartitionMBR && l.Table != PartitionGPT {
			t.Fatalf("layout %+v does not describe partition %d at %d", l, src.PartNumber, src.Start)
		}
		fsSectors := fuzzImageSectors - l.RootStart - l.Overhead()/sectorSize - 1
		if fsSectors < 1 {
			return
		}
		writeDisk(t, out, nil, fuzzImageSectors*sectorSize)
		img, err := os.OpenFile(out, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		if err := l.WriteTable(boundedWriter{img, fuzzImageSectors * sectorSize, t}, fuzzImageSectors, fsSectors); err != nil {
			return
		}
		back, err := ReadLayout(&SourceDisk{Path: out, PartNumber: src.PartNumber, Start: l.RootStart})
		if err != nil {
			t.Fatalf("the table we wrote does not read back: %v", err)
		}
		if back.Table != l.Table || back.RootIndex != l.RootIndex || back.RootStart != l.RootStart ||
			back.biosIndex != l.biosIndex || l.biosIndex >= 0 && (back.biosStart != l.biosStart || back.biosEnd != l.biosEnd) {
			t.Fatalf("layout changed in a round trip:\n%+v\n%+v", l, back)
		}
		if len(back.Dropped) != 0 {
			t.Fatalf("the image's table has partitions besides root and BIOS boot: %v", back.Dropped)
		}
	})
}

// boundedWriter fails the test on a write outside the image.
type boundedWriter struct {
	f    *os.File
	size int64
	t    *testing.T
}

func (w boundedWriter) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.size {
		w.t.Fatalf("write of %d bytes at %d, outside the %d-byte image", len(p), off, w.size)
	}
	return w.f.WriteAt(p, off)
}

func writeDisk(t *testing.T, path string, data []byte, size int64) {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, max(size, int64(len(data)))); err != nil {
		t.Fatal(err)
	}
}

// tableStart is where the table in data says partition part starts (what the kernel
// would report), or 0.
func tableStart(data []byte, part int) int64 {
	if len(data) < 2*sectorSize || part < 1 {
		return 0
	}
	if data[446+4] != 0xEE {
		if part > 4 {
			return 0
		}
		return int64(binary.LittleEndian.Uint32(data[446+16*(part-1)+8:]))
	}
	h := data[sectorSize:]
	lba, size := binary.LittleEndian.Uint64(h[72:]), int64(binary.LittleEndian.Uint32(h[84:]))
	off := int64(lba)*sectorSize + int64(part-1)*size + 32
	if lba > uint64(len(data)) || size < 0 || off < 0 || off+8 > int64(len(data)) {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(data[off:]))
}

// fixGPT recomputes the CRCs of a GPT header in data and of its entries where they
// lie inside data.
func fixGPT(data []byte) {
	if len(data) < 2*sectorSize || string(data[sectorSize:sectorSize+8]) != "EFI PART" {
		return
	}
	h := data[sectorSize : 2*sectorSize]
	lba := binary.LittleEndian.Uint64(h[72:])
	n := uint64(binary.LittleEndian.Uint32(h[80:])) * uint64(binary.LittleEndian.Uint32(h[84:]))
	if lba < uint64(len(data))/sectorSize && n <= uint64(len(data)) && lba*sectorSize+n <= uint64(len(data)) {
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(data[lba*sectorSize:lba*sectorSize+n]))
	}
	hs := binary.LittleEndian.Uint32(h[12:])
	if hs >= 92 && hs <= sectorSize {
		binary.LittleEndian.PutUint32(h[16:], 0)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
	}
}
