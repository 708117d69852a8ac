package volume

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// FSInfo is what an image's filesystem must share with the source: type, label, UUID,
// geometry and on-disk features, read straight from the superblock.
type FSInfo struct {
	Type      string // ext2, ext3, ext4 or xfs
	Label     string
	UUID      [16]byte
	BlockSize int
	Size      int64 // bytes the filesystem spans
	InodeSize int

	// ext2/3/4
	Inodes         uint64
	ReservedBlocks uint64
	Blocks         uint64
	ExtFeatures    []string // mke2fs names of the features that mke2fs can set
	ExtDropped     []string // features of the source that mke2fs cannot set

	// xfs
	XFS XFSFeatures
}

// UUIDString formats the UUID the way blkid and mkfs print it.
func (fi *FSInfo) UUIDString() string { return formatUUID(fi.UUID) }

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// ErrUnknownFS is returned for a filesystem that is neither ext2/3/4 nor xfs.
var ErrUnknownFS = errors.New("unknown filesystem")

// ReadFSInfo reads the superblock of the filesystem on dev (a block device or image).
func ReadFSInfo(dev string) (*FSInfo, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("reading superblock: %w", err)
	}
	defer f.Close()
	return readFSInfo(f, dev)
}

func readFSInfo(r io.ReaderAt, name string) (*FSInfo, error) {
	buf := make([]byte, 2048)
	if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading superblock of %s: %w", name, err)
	}
	if string(buf[0:4]) == "XFSB" {
		return parseXFS(buf[:512])
	}
	if binary.LittleEndian.Uint16(buf[1024+56:]) == 0xEF53 {
		return parseExt(buf[1024:2048])
	}
	return nil, fmt.Errorf("%s: %w: only ext2/3/4 and xfs can be imaged", name, ErrUnknownFS)
}

type extFeature struct {
	field   int // 0 compat, 1 incompat, 2 ro_compat
	bit     uint32
	name    string
	dropped bool // unsupported by mke2fs: not passed on
	state   bool // a state flag, not a format choice: not passed on, not reported
}

// extFeatures names the feature bits as e2fsprogs (lib/e2p/feature.c) does.
var extFeatures = []extFeature{
	{0, 0x1, "dir_prealloc", false, false}, {0, 0x2, "imagic_inodes", true, false},
	{0, 0x4, "has_journal", false, false}, {0, 0x8, "ext_attr", false, false},
	{0, 0x10, "resize_inode", false, false}, {0, 0x20, "dir_index", false, false},
	{0, 0x40, "lazy_bg", true, false}, {0, 0x80, "snapshot_bitmap", true, false},
	{0, 0x100, "sparse_super2", false, false}, {0, 0x200, "fast_commit", false, false},
	{0, 0x400, "stable_inodes", false, false}, {0, 0x800, "orphan_file", false, false},
	{1, 0x1, "compression", true, false}, {1, 0x2, "filetype", false, false},
	{1, 0x4, "needs_recovery", true, true}, {1, 0x8, "journal_dev", true, false},
	{1, 0x10, "meta_bg", false, false}, {1, 0x40, "extent", false, false}, {1, 0x80, "64bit", false, false},
	{1, 0x100, "mmp", false, false}, {1, 0x200, "flex_bg", false, false}, {1, 0x400, "ea_inode", false, false},
	{1, 0x1000, "dirdata", true, false}, {1, 0x2000, "metadata_csum_seed", false, false},
	{1, 0x4000, "large_dir", false, false}, {1, 0x8000, "inline_data", false, false},
	{1, 0x10000, "encrypt", false, false}, {1, 0x20000, "casefold", false, false},
	{2, 0x1, "sparse_super", false, false}, {2, 0x2, "large_file", false, false},
	{2, 0x4, "btree_dir", true, false}, {2, 0x8, "huge_file", false, false},
	{2, 0x10, "uninit_bg", false, false}, {2, 0x20, "dir_nlink", false, false},
	{2, 0x40, "extra_isize", false, false}, {2, 0x80, "snapshot", true, false},
	{2, 0x100, "quota", false, false}, {2, 0x200, "bigalloc", false, false},
	{2, 0x400, "metadata_csum", false, false}, {2, 0x800, "replica", true, false},
	{2, 0x1000, "read-only", true, false}, {2, 0x2000, "project", false, false},
	{2, 0x4000, "shared_blocks", true, false}, {2, 0x8000, "verity", false, false},
	{2, 0x10000, "orphan_present", true, true},
}

func parseExt(sb []byte) (*FSInfo, error) {
	le := binary.LittleEndian
	fi := &FSInfo{}
	fi.Inodes = uint64(le.Uint32(sb[0:]))
	logBS := le.Uint32(sb[24:])
	if logBS > 6 {
		return nil, fmt.Errorf("ext superblock: block size 2^(10+%d) is invalid", logBS)
	}
	fi.BlockSize = 1024 << logBS
	fields := [3]uint32{le.Uint32(sb[92:]), le.Uint32(sb[96:]), le.Uint32(sb[100:])}
	fi.Blocks = uint64(le.Uint32(sb[4:]))
	fi.ReservedBlocks = uint64(le.Uint32(sb[8:]))
	if fields[1]&0x80 != 0 { // 64bit
		fi.Blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		fi.ReservedBlocks |= uint64(le.Uint32(sb[0x154:])) << 32
	}
	fi.Size = int64(fi.Blocks) * int64(fi.BlockSize)
	fi.InodeSize = 128
	if le.Uint32(sb[76:]) >= 1 {
		fi.InodeSize = int(le.Uint16(sb[88:]))
	}
	copy(fi.UUID[:], sb[104:120])
	fi.Label = cString(sb[120:136])
	seen := [3]uint32{}
	for _, f := range extFeatures {
		if fields[f.field]&f.bit == 0 {
			continue
		}
		seen[f.field] |= f.bit
		if f.state {
			continue
		}
		if f.dropped {
			fi.ExtDropped = append(fi.ExtDropped, f.name)
		} else {
			fi.ExtFeatures = append(fi.ExtFeatures, f.name)
		}
	}
	for i, name := range []string{"compat", "incompat", "ro_compat"} {
		if rest := fields[i] &^ seen[i]; rest != 0 {
			fi.ExtDropped = append(fi.ExtDropped, fmt.Sprintf("%s:%#x", name, rest))
		}
	}
	switch {
	case fields[1]&^0x6 != 0 || fields[2]&^0x3 != 0: // anything beyond ext3's set
		fi.Type = "ext4"
	case fields[0]&0x4 != 0:
		fi.Type = "ext3"
	default:
		fi.Type = "ext2"
	}
	return fi, nil
}

// XFSFeatures are the mkfs.xfs switches that the source's superblock determines.
type XFSFeatures struct {
	CRC, FInobt, RmapBT, Reflink, BigTime, InobtCount, Sparse, FType, NRExt64 bool
	DirBlockSize                                                              int
}

func parseXFS(sb []byte) (*FSInfo, error) {
	be := binary.BigEndian
	fi := &FSInfo{Type: "xfs"}
	fi.BlockSize = int(be.Uint32(sb[4:]))
	fi.Size = int64(be.Uint64(sb[8:])) * int64(fi.BlockSize)
	copy(fi.UUID[:], sb[32:48])
	fi.InodeSize = int(be.Uint16(sb[104:]))
	fi.Label = cString(sb[108:120])
	version := be.Uint16(sb[100:]) & 0xf
	feat2 := be.Uint32(sb[200:])
	ro := be.Uint32(sb[212:])
	incompat := be.Uint32(sb[216:])
	x := &fi.XFS
	x.DirBlockSize = fi.BlockSize << sb[192]
	if version == 5 {
		x.CRC = true
		x.FType = true
		x.FInobt = ro&0x1 != 0
		x.RmapBT = ro&0x2 != 0
		x.Reflink = ro&0x4 != 0
		x.InobtCount = ro&0x8 != 0
		x.Sparse = incompat&0x2 != 0
		x.BigTime = incompat&0x8 != 0
		x.NRExt64 = incompat&0x20 != 0
	} else {
		x.FType = feat2&0x200 != 0
	}
	return fi, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}
