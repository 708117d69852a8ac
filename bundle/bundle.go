// Package bundle implements the EC2 instance-store bundle format (manifest version
// 2007-10-10): the streaming writer (image -> tar -> SHA-1 -> gzip -> AES-128-CBC ->
// parts), the manifest with its exact serialization and signature, key wrapping with
// the EC2 and user certificates, and the reader that unbundles and verifies.
//
// The package is pure Go and imports neither AWS nor Packer: the S3 side and the
// Packer components build on it.
package bundle

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// ManifestVersion is the only manifest version EC2 reads.
const ManifestVersion = "2007-10-10"

// PartSize is the size of every part but the last, as ec2-ami-tools cuts them.
const PartSize = 10 << 20

// MaxImageSize is EC2's root device limit for instance-store AMIs (10240 MiB), which
// the reference tools enforce too.
const MaxImageSize = 10240 << 20

// Part is one encrypted part of a bundle, handed to a Sink in index order.
type Part struct {
	Index int
	Name  string // base name, e.g. "image.part.07"
	// Data is the ciphertext. Ownership passes to the Sink: the Writer never touches
	// it again, so a sink may keep it while an upload is in flight.
	Data []byte
	SHA1 [20]byte
	MD5  [16]byte
}

// Sink receives the parts of a bundle. PutPart is called from one goroutine, in index
// order; a sink may work asynchronously but must bound what it holds (that bound is the
// bundle's memory bound). Close waits for everything still in flight and returns the
// first error.
type Sink interface {
	PutPart(p *Part) error
	Close() error
}

// PartRenamer is implemented by sinks that can rename a stored part cheaply (a local
// directory). The Writer names parts while streaming, before it knows the final part
// count; such sinks get the exact ec2-ami-tools names (zero-padded to the number of
// digits of the count) at the end.
type PartRenamer interface {
	RenamePart(from, to string) error
}

// Key is the AES-128 key and IV of one bundle. Outside the cipher they travel as
// 32-character lowercase hex strings (that string, not the raw bytes, is what the
// manifest wraps with RSA).
type Key struct {
	Key [16]byte
	IV  [16]byte
}

// NewKey returns a fresh random key and IV.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k.Key[:]); err != nil {
		return Key{}, fmt.Errorf("generating bundle key: %w", err)
	}
	if _, err := rand.Read(k.IV[:]); err != nil {
		return Key{}, fmt.Errorf("generating bundle IV: %w", err)
	}
	return k, nil
}

// KeyHex is the key as the 32-character lowercase hex string.
func (k Key) KeyHex() string { return hex.EncodeToString(k.Key[:]) }

// IVHex is the IV as the 32-character lowercase hex string.
func (k Key) IVHex() string { return hex.EncodeToString(k.IV[:]) }

// ParseKey reads a key and IV from their hex strings.
func ParseKey(keyHex, ivHex string) (Key, error) {
	var k Key
	for _, f := range []struct {
		what string
		s    string
		dst  []byte
	}{{"key", keyHex, k.Key[:]}, {"IV", ivHex, k.IV[:]}} {
		b, err := hex.DecodeString(f.s)
		if err != nil || len(b) != 16 {
			return Key{}, fmt.Errorf("bundle %s must be 32 hex characters (AES-128)", f.what)
		}
		copy(f.dst, b)
	}
	return k, nil
}

// PartInfo describes one stored part.
type PartInfo struct {
	Index int
	Name  string
	Size  int64
	SHA1  string // lowercase hex
	MD5   [16]byte
}

// Result is what the Writer produced: everything the manifest needs besides the
// machine configuration and the wrapped keys.
type Result struct {
	Name        string     // bundle name: tar member name and part-name prefix
	Digest      string     // SHA-1 of the uncompressed tar stream, lowercase hex
	Size        int64      // apparent size of the image in bytes
	BundledSize int64      // sum of the part sizes
	Parts       []PartInfo // in index order, with their final names
}
