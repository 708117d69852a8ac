package volume

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Partition table types for Config.Partition.
const (
	PartitionAuto = "auto"
	PartitionNone = "none"
	PartitionMBR  = "mbr"
	PartitionGPT  = "gpt"
)

// GUIDs of the GPT partition types we create or recognise (mixed-endian on disk).
var (
	gptTypeBIOSBoot = mustGUID("21686148-6449-6E6F-744E-656564454649")
	gptTypeLinux    = mustGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
	gptTypeESP      = mustGUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
)

// DiskLayout is the partitioned disk an HVM image is written as: the table type, the
// root partition's slot and start, and what is carried over from the source disk (boot
// code, the gap before the first partition where GRUB 2 keeps core.img, a BIOS boot
// partition, an EFI system partition before the root, as today's cloud images have).
type DiskLayout struct {
	Table     string // "mbr" or "gpt"
	RootIndex int    // 0-based slot of the root partition in the table
	RootStart int64  // first sector of the root partition

	// From the source disk; all nil/zero for a fresh table.
	source     string
	sector0    []byte // MBR or protective MBR (boot code, disk signature, entries)
	gpt        *gptHeader
	entries    []byte // the whole GPT entry array
	gapStart   int64  // sectors [gapStart, gapEnd) copied verbatim
	gapEnd     int64
	biosIndex  int // slot of the BIOS boot partition, -1 if none
	biosStart  int64
	biosEnd    int64 // inclusive
	espIndex   int   // slot of the EFI system partition kept in the image, -1 if none
	espStart   int64
	espEnd     int64 // inclusive
	Dropped    []string
	freshTable bool
	hasESP     bool // the source disk has an EFI system partition (kept or not)
}

// Overhead is the number of bytes the layout needs after the root filesystem (the GPT
// backup header and entries).
func (l *DiskLayout) Overhead() int64 {
	if l.Table != PartitionGPT {
		return 0
	}
	return int64(1+l.entrySectors()) * sectorSize
}

func (l *DiskLayout) entrySectors() int64 {
	if l.gpt == nil {
		return 32
	}
	return (int64(l.gpt.NumEntries)*int64(l.gpt.EntrySize) + sectorSize - 1) / sectorSize
}

// FreshLayout is a new table of the given type with one root partition at 1 MiB and no
// boot code: used when the partition layout asks for a table the source disk does not have.
func FreshLayout(table string) *DiskLayout {
	return &DiskLayout{Table: table, RootIndex: 0, RootStart: 2048, biosIndex: -1, espIndex: -1, freshTable: true}
}

type mbrEntry struct {
	Status   byte
	CHSFirst [3]byte
	Type     byte
	CHSLast  [3]byte
	LBAFirst uint32
	Sectors  uint32
}

type gptHeader struct {
	Signature      [8]byte
	Revision       uint32
	HeaderSize     uint32
	HeaderCRC      uint32
	Reserved       uint32
	MyLBA          uint64
	AlternateLBA   uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	DiskGUID       [16]byte
	EntriesLBA     uint64
	NumEntries     uint32
	EntrySize      uint32
	EntriesCRC     uint32
}

type gptEntry struct {
	Type       [16]byte
	Unique     [16]byte
	FirstLBA   uint64
	LastLBA    uint64
	Attributes uint64
	Name       [72]byte
}

// ReadLayout reads the partition table of the source disk and describes the image
// that keeps it for a root in partition number part starting at sector start.
func ReadLayout(disk *SourceDisk) (*DiskLayout, error) {
	f, err := os.Open(disk.Path)
	if err != nil {
		return nil, fmt.Errorf("reading the partition table: %w", err)
	}
	defer f.Close()
	s0 := make([]byte, sectorSize)
	if _, err := f.ReadAt(s0, 0); err != nil {
		return nil, fmt.Errorf("reading the partition table of %s: %w", disk.Path, err)
	}
	if s0[510] != 0x55 || s0[511] != 0xAA {
		return nil, fmt.Errorf("%s has no MBR signature: use the partition layout none, mbr or gpt", disk.Path)
	}
	ents := mbrEntries(s0)
	l := &DiskLayout{source: disk.Path, sector0: s0, biosIndex: -1, espIndex: -1, RootStart: disk.Start, RootIndex: disk.PartNumber - 1}
	if ents[0].Type == 0xEE {
		return l, l.readGPT(f, disk)
	}
	l.Table = PartitionMBR
	if disk.PartNumber < 1 || disk.PartNumber > 4 {
		return nil, fmt.Errorf("the volume is logical partition %d of %s: only primary MBR partitions can be kept; use the partition layout none, or mbr/gpt for a fresh table", disk.PartNumber, disk.Path)
	}
	if int64(ents[l.RootIndex].LBAFirst) != disk.Start {
		return nil, fmt.Errorf("MBR of %s: partition %d starts at sector %d, the kernel says %d", disk.Path, disk.PartNumber, ents[l.RootIndex].LBAFirst, disk.Start)
	}
	l.gapStart, l.gapEnd = 1, disk.Start
	for i, e := range ents {
		if e.Type == 0 || e.Sectors == 0 {
			continue
		}
		l.gapEnd = min(l.gapEnd, int64(e.LBAFirst))
		if i != l.RootIndex {
			l.Dropped = append(l.Dropped, fmt.Sprintf("partition %d (type %#02x)", i+1, e.Type))
		}
	}
	return l, nil
}

func mbrEntries(s0 []byte) [4]mbrEntry {
	var e [4]mbrEntry
	binary.Read(bytes.NewReader(s0[446:510]), binary.LittleEndian, &e)
	return e
}

func (l *DiskLayout) readGPT(f io.ReaderAt, disk *SourceDisk) error {
	l.Table = PartitionGPT
	hb := make([]byte, sectorSize)
	if _, err := f.ReadAt(hb, sectorSize); err != nil {
		return fmt.Errorf("reading the GPT header of %s: %w", disk.Path, err)
	}
	var h gptHeader
	binary.Read(bytes.NewReader(hb), binary.LittleEndian, &h)
	if string(h.Signature[:]) != "EFI PART" || h.HeaderSize < 92 || h.HeaderSize > sectorSize || h.EntrySize < 128 || h.EntrySize > 4096 || h.NumEntries == 0 || h.NumEntries > 4096 ||
		// The entry array is read whole: bound it (a standard one is 16 KiB).
		uint64(h.NumEntries)*uint64(h.EntrySize) > 1<<20 {
		return fmt.Errorf("%s has a protective MBR but no valid GPT header", disk.Path)
	}
	check := bytes.Clone(hb[:h.HeaderSize])
	binary.LittleEndian.PutUint32(check[16:], 0)
	if crc32.ChecksumIEEE(check) != h.HeaderCRC {
		return fmt.Errorf("the GPT header of %s has a bad CRC: repair the table (sgdisk -v) or use the partition layout none", disk.Path)
	}
	l.gpt = &h
	l.entries = make([]byte, int(h.NumEntries)*int(h.EntrySize))
	if _, err := f.ReadAt(l.entries, int64(h.EntriesLBA)*sectorSize); err != nil {
		return fmt.Errorf("reading the GPT entries of %s: %w", disk.Path, err)
	}
	if crc32.ChecksumIEEE(l.entries) != h.EntriesCRC {
		return fmt.Errorf("the GPT entries of %s have a bad CRC: repair the table (sgdisk -v) or use the partition layout none", disk.Path)
	}
	if disk.PartNumber < 1 || disk.PartNumber > int(h.NumEntries) {
		return fmt.Errorf("GPT of %s has no partition %d", disk.Path, disk.PartNumber)
	}
	root := l.entry(l.RootIndex)
	if int64(root.FirstLBA) != disk.Start {
		return fmt.Errorf("GPT of %s: partition %d starts at sector %d, the kernel says %d", disk.Path, disk.PartNumber, root.FirstLBA, disk.Start)
	}
	l.gapStart = int64(h.EntriesLBA) + l.entrySectors()
	l.gapEnd = disk.Start
	for i := 0; i < int(h.NumEntries); i++ {
		e := l.entry(i)
		if e.Type == ([16]byte{}) {
			continue
		}
		l.gapEnd = min(l.gapEnd, int64(e.FirstLBA))
		switch {
		case i == l.RootIndex:
		case e.Type == gptTypeBIOSBoot && l.biosIndex < 0 && int64(e.LastLBA) < disk.Start:
			l.biosIndex, l.biosStart, l.biosEnd = i, int64(e.FirstLBA), int64(e.LastLBA)
		case e.Type == gptTypeESP && l.espIndex < 0 && int64(e.LastLBA) < disk.Start && e.LastLBA >= e.FirstLBA:
			// Kept verbatim: the image's disk is as big as the root needs, and the
			// ESP lies before it.
			l.espIndex, l.espStart, l.espEnd = i, int64(e.FirstLBA), int64(e.LastLBA)
			l.hasESP = true
		default:
			if e.Type == gptTypeESP {
				l.hasESP = true
			}
			l.Dropped = append(l.Dropped, fmt.Sprintf("partition %d (%s)", i+1, formatGUID(e.Type)))
		}
	}
	l.gapStart = min(l.gapStart, l.gapEnd)
	return nil
}

func (l *DiskLayout) entry(i int) gptEntry {
	var e gptEntry
	off := i * int(l.gpt.EntrySize)
	binary.Read(bytes.NewReader(l.entries[off:off+128]), binary.LittleEndian, &e)
	return e
}

// WriteTable writes the partition table for a disk image of totalSectors sectors whose
// root filesystem has fsSectors sectors, and copies the boot code, the gap before the
// first partition and a BIOS boot partition from the source disk.
func (l *DiskLayout) WriteTable(img io.WriterAt, totalSectors, fsSectors int64) error {
	rootEnd := l.RootStart + fsSectors - 1
	if l.Table == PartitionGPT && rootEnd > totalSectors-1-l.entrySectors()-1 || rootEnd >= totalSectors {
		return fmt.Errorf("the root partition (sectors %d-%d) does not fit a %d-sector image", l.RootStart, rootEnd, totalSectors)
	}
	var err error
	if l.Table == PartitionMBR {
		err = l.writeMBR(img, totalSectors, rootEnd)
	} else {
		err = l.writeGPT(img, totalSectors, rootEnd)
	}
	if err != nil {
		return err
	}
	if l.source == "" {
		return nil
	}
	src, err := os.Open(l.source)
	if err != nil {
		return fmt.Errorf("copying the boot area: %w", err)
	}
	defer src.Close()
	if err := copyRange(img, src, l.gapStart*sectorSize, (l.gapEnd-l.gapStart)*sectorSize); err != nil {
		return fmt.Errorf("copying the boot gap of %s: %w", l.source, err)
	}
	if l.biosIndex >= 0 {
		if err := copyRange(img, src, l.biosStart*sectorSize, (l.biosEnd-l.biosStart+1)*sectorSize); err != nil {
			return fmt.Errorf("copying the BIOS boot partition of %s: %w", l.source, err)
		}
	}
	if l.espIndex >= 0 {
		if err := copyRange(img, src, l.espStart*sectorSize, (l.espEnd-l.espStart+1)*sectorSize); err != nil {
			return fmt.Errorf("copying the EFI system partition of %s: %w", l.source, err)
		}
	}
	return nil
}

// copyRange copies n bytes at off from src to dst at the same offset, leaving zero
// blocks unwritten so the image stays sparse.
func copyRange(dst io.WriterAt, src io.ReaderAt, off, n int64) error {
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for pos := off; pos < off+n; {
		want := min(int64(len(buf)), off+n-pos)
		r, err := src.ReadAt(buf[:want], pos)
		if r > 0 && !bytes.Equal(buf[:r], zero[:r]) {
			if _, werr := dst.WriteAt(buf[:r], pos); werr != nil {
				return werr
			}
		}
		pos += int64(r)
		if err == io.EOF && r == 0 {
			return io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// chs encodes an LBA as a cylinder/head/sector triple for 255 heads and 63 sectors
// per track, saturating as fdisk does.
func chs(lba int64) [3]byte {
	if lba >= 1024*255*63 {
		return [3]byte{254, 0xFF, 0xFF}
	}
	c := lba / (255 * 63)
	h := (lba / 63) % 255
	s := lba%63 + 1
	return [3]byte{byte(h), byte(s) | byte((c>>8)&3)<<6, byte(c)}
}

func (l *DiskLayout) writeMBR(img io.WriterAt, totalSectors, rootEnd int64) error {
	s0 := make([]byte, sectorSize)
	var root mbrEntry
	if l.sector0 != nil {
		copy(s0[:446], l.sector0[:446]) // boot code, disk signature (PARTUUID), reserved
		root = mbrEntries(l.sector0)[l.RootIndex]
	} else {
		rand.Read(s0[440:444])
		root = mbrEntry{Status: 0x80, Type: 0x83}
	}
	root.LBAFirst = uint32(l.RootStart)
	root.Sectors = uint32(rootEnd - l.RootStart + 1)
	root.CHSFirst, root.CHSLast = chs(l.RootStart), chs(rootEnd)
	if rootEnd > 0xFFFFFFFF {
		return errors.New("the image is too large for an MBR partition table: use the partition layout gpt")
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, root)
	copy(s0[446+16*l.RootIndex:], b.Bytes())
	s0[510], s0[511] = 0x55, 0xAA
	_, err := img.WriteAt(s0, 0)
	return err
}

func (l *DiskLayout) writeGPT(img io.WriterAt, totalSectors, rootEnd int64) error {
	last := totalSectors - 1
	h := gptHeader{Revision: 0x00010000, HeaderSize: 92, NumEntries: 128, EntrySize: 128, FirstUsableLBA: 34}
	copy(h.Signature[:], "EFI PART")
	var entries []byte
	if l.gpt != nil {
		h.NumEntries, h.EntrySize, h.DiskGUID, h.FirstUsableLBA = l.gpt.NumEntries, l.gpt.EntrySize, l.gpt.DiskGUID, l.gpt.FirstUsableLBA
		entries = make([]byte, len(l.entries))
		for _, i := range []int{l.RootIndex, l.biosIndex, l.espIndex} {
			if i >= 0 {
				off := i * int(h.EntrySize)
				copy(entries[off:off+int(h.EntrySize)], l.entries[off:])
			}
		}
	} else {
		rand.Read(h.DiskGUID[:])
		entries = make([]byte, 128*128)
		e := gptEntry{Type: gptTypeLinux, FirstLBA: uint64(l.RootStart)}
		rand.Read(e.Unique[:])
		for i, r := range "root" {
			e.Name[2*i] = byte(r)
		}
		var b bytes.Buffer
		binary.Write(&b, binary.LittleEndian, e)
		copy(entries, b.Bytes())
	}
	binary.LittleEndian.PutUint64(entries[l.RootIndex*int(h.EntrySize)+40:], uint64(rootEnd))
	es := (int64(len(entries)) + sectorSize - 1) / sectorSize
	h.LastUsableLBA = uint64(last - es - 1)
	h.EntriesCRC = crc32.ChecksumIEEE(entries)

	// Protective MBR, keeping the boot code (GRUB's boot.img) and disk signature.
	s0 := make([]byte, sectorSize)
	if l.sector0 != nil {
		copy(s0[:446], l.sector0[:446])
	}
	pm := mbrEntry{Type: 0xEE, CHSFirst: [3]byte{0, 2, 0}, CHSLast: chs(last), LBAFirst: 1, Sectors: uint32(min(last, 0xFFFFFFFF))}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, pm)
	copy(s0[446:], b.Bytes())
	s0[510], s0[511] = 0x55, 0xAA
	if _, err := img.WriteAt(s0, 0); err != nil {
		return err
	}

	write := func(my, alt, entriesLBA int64) error {
		hh := h
		hh.MyLBA, hh.AlternateLBA, hh.EntriesLBA = uint64(my), uint64(alt), uint64(entriesLBA)
		hh.HeaderCRC = 0
		var hb bytes.Buffer
		binary.Write(&hb, binary.LittleEndian, hh)
		raw := hb.Bytes()[:92]
		hh.HeaderCRC = crc32.ChecksumIEEE(raw)
		binary.LittleEndian.PutUint32(raw[16:], hh.HeaderCRC)
		sec := make([]byte, sectorSize)
		copy(sec, raw)
		if _, err := img.WriteAt(sec, my*sectorSize); err != nil {
			return err
		}
		_, err := img.WriteAt(entries, entriesLBA*sectorSize)
		return err
	}
	if err := write(1, last, 2); err != nil {
		return fmt.Errorf("writing the primary GPT: %w", err)
	}
	if err := write(last, 1, last-es); err != nil {
		return fmt.Errorf("writing the backup GPT: %w", err)
	}
	return nil
}

// mustGUID parses a GUID in its text form into the mixed-endian on-disk bytes.
func mustGUID(s string) [16]byte {
	var g [16]byte
	var raw []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			continue
		}
		var v byte
		fmt.Sscanf(s[i:i+2], "%02x", &v)
		raw = append(raw, v)
		i++
	}
	if len(raw) != 16 {
		panic("bad GUID " + s)
	}
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g
}

func formatGUID(g [16]byte) string {
	return fmt.Sprintf("%02X%02X%02X%02X-%02X%02X-%02X%02X-%X-%X",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:10], g[10:16])
}

// KeptESP tells whether the image keeps the source disk's EFI system partition, and
// its 1-based partition number.
func (l *DiskLayout) KeptESP() (int, bool) { return l.espIndex + 1, l.espIndex >= 0 }

// CheckLegacyBIOS fails for a source disk that boots with UEFI only: a GPT disk with an
// EFI system partition and no BIOS boot partition, where GRUB for BIOS (i386-pc) keeps
// its core image. The instance store families boot Xen HVM guests with legacy BIOS.
func (l *DiskLayout) CheckLegacyBIOS() error {
	if l.Table == PartitionGPT && l.source != "" && l.hasESP && l.biosIndex < 0 {
		return fmt.Errorf("the disk %s boots with UEFI only (a GPT disk with an EFI system partition and no BIOS boot partition): the instance types that run instance store-backed AMIs boot legacy BIOS; start from a source whose disk has a BIOS boot partition with GRUB for i386-pc (official Debian, Ubuntu and Amazon Linux cloud images do), or add one and run grub-install --target=i386-pc on the source first", l.source)
	}
	return nil
}
