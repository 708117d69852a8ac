package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// The tar stream of a bundle is what GNU tar 1.34 writes for `tar -c -S` of the image
// in its default (gnu) format, as ec2-ami-tools runs it: one member, an old-GNU sparse
// member (typeflag 'S') when the image has holes, a regular one otherwise, and the
// archive padded to a 10240-byte record. Go's archive/tar can read that but not write
// it, hence the headers below.

const (
	tarRecord = 20 * tarBlock // GNU tar's default blocking factor

	sparsesInHeader    = 4  // sparse map entries in the member header
	sparsesInExtension = 21 // entries in each extension block that follows it

	// Offsets in a header block (GNU tar's struct posix_header / oldgnu_header).
	offName       = 0
	offMode       = 100
	offUID        = 108
	offGID        = 116
	offSize       = 124
	offMtime      = 136
	offChksum     = 148
	offTypeflag   = 156
	offMagic      = 257 // "ustar  \0" spans magic and version
	offUname      = 265
	offGname      = 297
	offSparse     = 386
	offIsExtended = 482
	offRealSize   = 483
	extIsExtended = sparsesInExtension * 24
)

// maxTarName is the longest member name that fits the header without a GNU long-name
// entry; bundle names are short, so longer ones are refused rather than encoded.
const maxTarName = 99

// tarArchive is the layout of the one-member archive of an image.
type tarArchive struct {
	img     *Image
	header  []byte   // member header plus sparse extension blocks
	extents []Extent // regions of the image stored in the member, in order
	size    int64    // length of the whole archive, padding included
}

// newTarArchive lays out the archive holding img as a member called name.
func newTarArchive(name string, img *Image) (*tarArchive, error) {
	if err := checkTarName(name); err != nil {
		return nil, err
	}
	if img.err != nil {
		return nil, img.err
	}
	size := img.Size()
	extents := img.extents
	// GNU tar stores a file without holes as a regular member: do the same.
	sparse := !(len(extents) == 0 && size == 0) && !(len(extents) == 1 && extents[0] == Extent{0, size})
	if !sparse {
		extents = []Extent{{0, size}}
		if size == 0 {
			extents = nil
		}
	}
	stored := dataSize(extents)

	hdr := make([]byte, tarBlock)
	copy(hdr[offName:], name)
	formatNumeric(hdr[offMode:offMode+8], tarMode(img.Mode()))
	formatNumeric(hdr[offUID:offUID+8], 0)
	formatNumeric(hdr[offGID:offGID+8], 0)
	formatNumeric(hdr[offSize:offSize+12], stored)
	formatNumeric(hdr[offMtime:offMtime+12], img.ModTime().Unix())
	copy(hdr[offMagic:], "ustar  \x00")
	copy(hdr[offUname:], "root")
	copy(hdr[offGname:], "root")
	hdr[offTypeflag] = '0'

	if sparse {
		hdr[offTypeflag] = 'S'
		formatNumeric(hdr[offRealSize:offRealSize+12], size)
		// GNU tar ends the map with an empty region at the end of the file, whether
		// the file ends with a hole or not (sparse_scan_file_seek adds it when
		// SEEK_DATA reports ENXIO).
		sparseMap := append(extents[:len(extents):len(extents)], Extent{size, 0})
		rest := putSparse(hdr[offSparse:], sparseMap, sparsesInHeader)
		if len(rest) > 0 {
			hdr[offIsExtended] = 1
		}
		for len(rest) > 0 {
			ext := make([]byte, tarBlock)
			rest = putSparse(ext, rest, sparsesInExtension)
			if len(rest) > 0 {
				ext[extIsExtended] = 1
			}
			hdr = append(hdr, ext...)
		}
	}
	putChecksum(hdr[:tarBlock])

	body := int64(len(hdr)) + roundUp(stored, tarBlock) + 2*tarBlock // 2 zero blocks end the archive
	return &tarArchive{img: img, header: hdr, extents: extents, size: roundUp(body, tarRecord)}, nil
}

func checkTarName(name string) error {
	switch {
	case name == "":
		return errors.New("bundle name is empty: give the bundle a name (prefix)")
	case len(name) > maxTarName:
		return fmt.Errorf("bundle name %q is %d bytes long: use at most %d", name, len(name), maxTarName)
	case strings.ContainsAny(name, "/\x00"), name == ".", name == "..":
		return fmt.Errorf("bundle name %q must be a plain file name (no '/')", name)
	}
	return nil
}

// tarMode keeps the permission bits of m in their Unix encoding, as GNU tar's gnu
// format does (no file type bits).
func tarMode(m os.FileMode) int64 {
	v := int64(m.Perm())
	if m&os.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

// putSparse writes up to n (offset, numbytes) entries of 24 bytes at b and returns
// the entries left over.
func putSparse(b []byte, entries []Extent, n int) []Extent {
	for i := 0; i < n && len(entries) > 0; i++ {
		formatNumeric(b[i*24:i*24+12], entries[0].Offset)
		formatNumeric(b[i*24+12:i*24+24], entries[0].Length)
		entries = entries[1:]
	}
	return entries
}

// formatNumeric writes v into a header field as GNU tar does: zero-padded octal
// followed by a NUL when it fits, GNU base-256 (first byte 0x80 or 0xff for negative
// values, then big-endian two's complement) when it does not.
func formatNumeric(b []byte, v int64) {
	digits := len(b) - 1
	if v >= 0 && (digits >= 21 || v < int64(1)<<(3*digits)) {
		for i := digits - 1; i >= 0; i-- {
			b[i] = byte('0' + v&7)
			v >>= 3
		}
		b[digits] = 0
		return
	}
	for i := len(b) - 1; i > 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	if v < 0 {
		b[0] = 0xff
	} else {
		b[0] = 0x80
	}
}

// putChecksum fills the checksum field of a header block: the unsigned sum of its
// bytes with the field counted as spaces, as six octal digits, a NUL and a space.
func putChecksum(h []byte) {
	copy(h[offChksum:offChksum+8], "        ")
	var sum int64
	for _, c := range h {
		sum += int64(c)
	}
	formatNumeric(h[offChksum:offChksum+7], sum)
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

var zeroBlock [tarRecord]byte

// writeTo writes the archive to w, reading only the stored extents of the image with
// buf. read, if not nil, is told how many image bytes were read after each chunk. It
// stops when ctx is done.
func (a *tarArchive) writeTo(ctx context.Context, w io.Writer, buf []byte, read func(n int64)) error {
	if _, err := w.Write(a.header); err != nil {
		return err
	}
	var stored int64
	for _, e := range a.extents {
		for off := e.Offset; off < e.End(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			chunk := buf[:min(int64(len(buf)), e.End()-off)]
			n, err := a.img.r.ReadAt(chunk, off)
			if n < len(chunk) {
				if err == nil || errors.Is(err, io.EOF) {
					err = fmt.Errorf("image ends at %d, before its size %d: was it changed while bundling?", off+int64(n), a.img.Size())
				}
				return fmt.Errorf("reading %s at %d: %w", a.img.name, off, err)
			}
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			off += int64(n)
			stored += int64(n)
			if read != nil {
				read(int64(n))
			}
		}
	}
	// Pad the data to a block, then the end-of-archive blocks and the record.
	for pad := a.size - int64(len(a.header)) - stored; pad > 0; {
		n := min(pad, int64(len(zeroBlock)))
		if _, err := w.Write(zeroBlock[:n]); err != nil {
			return err
		}
		pad -= n
	}
	return nil
}
