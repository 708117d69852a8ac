package importpp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// imageKind is what the first bytes of an image say it is.
type imageKind int

const (
	kindUnknown    imageKind = iota
	kindDisk                 // a partition table (MBR or GPT): hvm
	kindFilesystem           // a bare ext2/3/4, xfs or btrfs filesystem: paravirtual
	kindQcow2
	kindVMDK
	kindVHDX
)

func (k imageKind) String() string {
	return [...]string{"unknown", "partitioned disk", "bare filesystem", "qcow2", "vmdk", "vhdx"}[k]
}

// sniff reads the headers that tell a raw disk from a bare filesystem, and the
// container formats EC2 cannot read.
func sniff(r io.ReaderAt) (imageKind, string, error) {
	head := make([]byte, 0x10100)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return kindUnknown, "", err
	}
	head = head[:n]
	at := func(off int, magic string) bool {
		return len(head) >= off+len(magic) && string(head[off:off+len(magic)]) == magic
	}
	switch {
	case at(0, "QFI\xfb"):
		return kindQcow2, "qcow2", nil
	case at(0, "KDMV"), at(0, "# Disk DescriptorFile"):
		return kindVMDK, "vmdk", nil
	case at(0, "vhdxfile"):
		return kindVHDX, "vhdx", nil
	case at(1080, "\x53\xef"):
		return kindFilesystem, "ext2/3/4", nil
	case at(0, "XFSB"):
		return kindFilesystem, "xfs", nil
	case at(0x10040, "_BHRfS_M"):
		return kindFilesystem, "btrfs", nil
	case at(512, "EFI PART"):
		return kindDisk, "GPT", nil
	case at(510, "\x55\xaa") && hasPartition(head[446:510]):
		return kindDisk, "MBR", nil
	}
	return kindUnknown, "", nil
}

// hasPartition reports whether an MBR partition table has a used entry.
func hasPartition(table []byte) bool {
	for i := 0; i < 4; i++ {
		e := table[i*16 : i*16+16]
		if e[4] != 0 && binary.LittleEndian.Uint32(e[12:16]) != 0 {
			return true
		}
	}
	return false
}

// rawExtensions are the file name endings taken as raw images in an artifact.
var rawExtensions = []string{".raw", ".img"}

// chooseImage picks the image to import: image_path if set, else the first file of
// the artifact that is a raw image by its name. A qcow2/vmdk file among them gives the
// error that says how to convert it.
func chooseImage(imagePath string, files []string) (string, error) {
	if imagePath != "" {
		return imagePath, nil
	}
	var others []string
	for _, f := range files {
		ext := strings.ToLower(filepath.Ext(f))
		for _, e := range rawExtensions {
			if ext == e {
				return f, nil
			}
		}
		others = append(others, f)
	}
	for _, f := range others {
		switch strings.ToLower(filepath.Ext(f)) {
		case ".qcow2", ".qcow", ".vmdk", ".vhdx", ".vhd", ".vdi":
			return "", convertError(f, strings.TrimPrefix(filepath.Ext(f), "."))
		}
	}
	if len(files) == 0 {
		return "", errors.New("the input artifact has no files and image_path is not set: give the raw disk image with image_path, or put a post-processor after a builder that makes one (file, qemu with format = \"raw\")")
	}
	return "", fmt.Errorf("none of the input artifact's files (%s) is a raw image (.raw or .img): name the image with image_path", strings.Join(files, ", "))
}

func convertError(file, format string) error {
	return fmt.Errorf("%s is a %s image; EC2 bundles raw images only: convert it with `qemu-img convert -O raw %s %s.raw` (or set format = \"raw\" in the qemu builder) and point image_path at the result",
		file, format, file, strings.TrimSuffix(file, filepath.Ext(file)))
}

// imageInfo is the checked image: where it is and the virtualization type it needs.
type imageInfo struct {
	Path           string
	Kind           imageKind
	Format         string // MBR, GPT, ext2/3/4, ...
	Virtualization string
}

// inspectImage opens path, checks it is a raw disk or filesystem image and settles the
// virtualization type, checking an explicit one against the image.
func inspectImage(path, virt, kernel string) (*imageInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening the image: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() == 0 {
		return nil, fmt.Errorf("image %s is empty or not a regular file", path)
	}
	kind, format, err := sniff(f)
	if err != nil {
		return nil, fmt.Errorf("reading image %s: %w", path, err)
	}
	info := &imageInfo{Path: path, Kind: kind, Format: format}
	switch kind {
	case kindQcow2, kindVMDK, kindVHDX:
		return nil, convertError(path, format)
	case kindUnknown:
		return nil, fmt.Errorf("image %s has neither a partition table (MBR, GPT) nor an ext2/3/4, xfs or btrfs filesystem at its start: give a raw disk image", path)
	case kindDisk:
		info.Virtualization = "hvm"
	case kindFilesystem:
		info.Virtualization = "paravirtual"
	}
	if virt != "" && virt != info.Virtualization {
		if virt == "hvm" {
			return nil, fmt.Errorf("ami_virtualization_type hvm: image %s is a bare %s filesystem with no partition table or boot code, which boots only as paravirtual; make a partitioned disk image or set ami_virtualization_type = \"paravirtual\" and ami_kernel_id", path, format)
		}
		return nil, fmt.Errorf("ami_virtualization_type paravirtual: image %s is a partitioned disk (%s), which a paravirtual kernel cannot mount as its root; use hvm (the default for such an image)", path, format)
	}
	if info.Virtualization == "hvm" && kernel != "" {
		return nil, fmt.Errorf("ami_kernel_id: image %s is a partitioned disk (%s), imported as hvm, which boots its own kernel; remove ami_kernel_id and ami_ramdisk_id", path, format)
	}
	if info.Virtualization == "paravirtual" && kernel == "" {
		return nil, fmt.Errorf("image %s is a bare %s filesystem, so the AMI is paravirtual and needs a kernel: set ami_kernel_id (an aki-... of the build region), or import a partitioned disk image with a boot loader as hvm", path, format)
	}
	return info, nil
}
