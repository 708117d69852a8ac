package ec2sim

import (
	"context"
	"io"
)

// RootSource is what an AMI's instances boot from: a directory tree (the seeded base
// AMIs) or a raw image file (an AMI registered from a bundle: a whole filesystem or a
// partitioned disk whose root partition is mounted).
type RootSource struct {
	Dir   string
	Image string
}

// LaunchSpec is one instance to start.
type LaunchSpec struct {
	InstanceID string
	// Root is an instance store-backed AMI's root: the launcher boots a private copy
	// of it. It is empty for an EBS-backed AMI, whose root is the Volumes entry with
	// Root set.
	Root RootSource
	// AuthorizedKey is the key pair's public key (one authorized_keys line), installed
	// for LoginUsers; empty when the instance was launched without a key pair.
	AuthorizedKey string
	LoginUsers    []string
	UserData      []byte

	// What a machine launcher (localenv/vm) needs to boot the AMI as EC2 would and to
	// answer the instance metadata service; the namespace launcher ignores them.
	ImageID, InstanceType, Region, Zone string
	Virtualization                      string // hvm or paravirtual
	KernelID, RamdiskID                 string
	RootDeviceName                      string
	KeyName                             string
	// BlockDevices is the AMI's block device mapping (ephemeralN names instance store
	// volumes).
	BlockDevices []DeviceMapping
	Metadata     MetadataOptions

	// Volumes are the instance's block devices backed by files: its EBS volumes (the
	// root first, for an EBS-backed AMI; then in attachment order) and, on the "d"
	// Nitro types (m5d, c5d, ...), its NVMe instance store disk (InstanceStore, an
	// empty file made for each start). The launcher uses the files in place, never
	// copies: what the instance writes is the volume's data, kept across
	// StopInstances/StartInstances and seen by CreateSnapshot. See Volume.
	Volumes []Volume
	// PrivateIP is the address the instance had before it was stopped, for
	// StartInstances (EC2 keeps a VPC instance's private IP across stop and start);
	// empty on the first launch. A launcher that cannot have it again may pick another.
	PrivateIP string
}

// Volume is one file-backed block device of an instance.
//
// The contract for a machine launcher (localenv/vm): attach each Volume as a raw disk
// (format raw, cache writeback or none, discard on, no copy and no backing chain).
// With NVMe (Nitro types) each one is its own NVMe controller whose serial is the
// VolumeID without its dash ("vol0123..."), as on EC2, in Volumes order: the root is
// /dev/nvme0n1 in the guest, the others nvme1n1, ... in order; the instance store
// disk is an NVMe controller too (serial "AWS" + a hex id, model "Amazon EC2 NVMe
// Instance Storage"). Without NVMe (Xen-like types) each is a virtio/Xen-style disk
// in the same order, and DeviceName (/dev/sdf, /dev/xvdf) is the name the guest
// should see (xvd* in the guest for sd*, as the Xen front-end names them). Booting
// an EBS-backed AMI means booting the Root volume's disk (legacy BIOS, or UEFI for an
// AMI with the uefi boot mode) as EC2 does; the namespace launcher instead mounts its
// root filesystem (the first ext4/XFS/Btrfs found, or GPT partition 1's).
// localenv/vm follows it except where qemu 7.2 cannot: every NVMe controller's model
// is "QEMU NVMe Ctrl" (the serial tells EBS from instance store), and a Xen-like
// guest sees virtio disks vda, vdb, ... (serial = the volume id without its dash),
// never xvd* names.
type Volume struct {
	DeviceName    string // the block device mapping's name: /dev/xvda, /dev/sdf; "ephemeral0" for instance store
	VolumeID      string // vol-...; empty for instance store
	Path          string // the raw, sparse backing file
	SizeGiB       int
	Root          bool // the root volume of an EBS-backed instance
	NVMe          bool // the guest sees an NVMe device (Nitro types)
	InstanceStore bool // an NVMe instance store disk: unformatted, emptied at every stop
}

// VolumeAttacher is an Instance that can hot-plug volumes: AttachVolume and
// DetachVolume on a running instance call it (outside the simulator's lock; the
// attachment moves from attaching to attached, or detaching to detached, when it
// returns). An Instance without it only has its attachments recorded; they are part
// of Volumes at its next start.
type VolumeAttacher interface {
	// AttachVolume makes v's file a disk of the running instance.
	AttachVolume(ctx context.Context, v Volume) error
	// DetachVolume removes it; the guest has unmounted it (or, for a forced detach,
	// has not: the data written until then is in the file).
	DetachVolume(ctx context.Context, v Volume) error
}

// DeviceMapping is one block device mapping entry of the AMI.
type DeviceMapping struct {
	DeviceName  string // /dev/sdb
	VirtualName string // ephemeral0
}

// MetadataOptions are RunInstances' MetadataOptions.
type MetadataOptions struct {
	HTTPTokens   string // optional (default) or required
	HopLimit     int    // HttpPutResponseHopLimit, default 1
	HTTPEndpoint string // enabled (default) or disabled
}

// ConsoleReader is an Instance that has a console (GetConsoleOutput).
type ConsoleReader interface {
	// ConsoleOutput is everything the instance wrote to its serial console so far.
	ConsoleOutput() ([]byte, error)
}

// Instance is a started instance.
type Instance interface {
	// PrivateIP is the address sshd listens on (port 22), inside a namespace we made.
	PrivateIP() string
	// Terminate stops sshd and removes the namespace, mounts and loop devices.
	Terminate(ctx context.Context) error
}

// Launcher starts instances. Launch returns once sshd answers (the instance is then
// "running") or with the reason it could not start.
type Launcher interface {
	Launch(ctx context.Context, spec LaunchSpec) (Instance, error)
}

// ObjectReader reads S3 objects as the EC2 service principal sees them: an object
// without the aws-exec-read grant (or a missing one) is an *S3Error.
type ObjectReader interface {
	GetAsEC2(ctx context.Context, bucket, key string) (io.ReadCloser, error)
	// BucketRegion is the region the bucket lives in.
	BucketRegion(ctx context.Context, bucket string) (string, error)
}

// S3Error is S3's answer when EC2 could not read an object.
type S3Error struct {
	Status  int
	Code    string // AccessDenied, NoSuchKey, NoSuchBucket
	Message string
}

func (e *S3Error) Error() string { return e.Code + ": " + e.Message }
