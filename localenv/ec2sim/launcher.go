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
	Root       RootSource
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
