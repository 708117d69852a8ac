package bundle

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Bundler names the tool that made a bundle (<bundler> in the manifest). EC2 does not
// interpret it.
type Bundler struct {
	Name, Version, Release string
}

// DefaultBundler is what NewManifest writes when ManifestConfig.Bundler is empty.
var DefaultBundler = Bundler{Name: "instancestore-bundler", Version: "0.1", Release: "0"}

// BlockDeviceMapping maps an EC2 virtual name (ami, root, swap, ephemeralN) to a device
// name inside the guest (sda1, /dev/sda1, sdb ...).
type BlockDeviceMapping struct {
	Virtual, Device string
}

// ManifestPart is one <part> of the manifest.
type ManifestPart struct {
	Index    int
	Filename string
	Digest   string // SHA-1 of the part, lowercase hex
}

// Manifest is an EC2 bundle manifest (version 2007-10-10). Marshal writes exactly the
// bytes ec2-ami-tools writes for the same values; ParseManifest is its strict inverse.
type Manifest struct {
	Version string
	Bundler Bundler

	// machine_configuration
	Architecture        string
	BlockDeviceMappings []BlockDeviceMapping
	KernelID, RamdiskID string
	ProductCodes        []string

	// image
	Name, User, Type string
	Ancestors        []string
	Digest           string // SHA-1 of the uncompressed tar stream, lowercase hex
	Size             int64  // apparent size of the image
	BundledSize      int64  // sum of the part sizes

	EC2EncryptedKey, UserEncryptedKey string
	EC2EncryptedIV, UserEncryptedIV   string

	Parts []ManifestPart

	Signature string // RSA-SHA1 over SignedBytes, lowercase hex
}

// Limits that make a manifest "absurd". EC2 and the reference tools cap images at
// MaxImageSize; we accept twice that (a generous margin for other tools) and the part
// count such an image could need even if gzip expanded it a little.
const (
	maxManifestImageSize = 2 * MaxImageSize
	maxManifestParts     = 2 * (MaxImageSize / PartSize)
	// maxManifestBytes bounds what ParseManifest reads: a manifest with
	// maxManifestParts parts and long names stays well below it.
	maxManifestBytes = 4 << 20
)

// xmlEscaper is REXML's text and attribute escaping.
var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")

// xmlWriter builds the one-line REXML-style serialization.
type xmlWriter struct{ bytes.Buffer }

func (w *xmlWriter) open(name string, attrs ...string) {
	w.WriteByte('<')
	w.WriteString(name)
	for i := 0; i+1 < len(attrs); i += 2 {
		fmt.Fprintf(w, " %s='%s'", attrs[i], xmlEscaper.Replace(attrs[i+1]))
	}
	w.WriteByte('>')
}

func (w *xmlWriter) close(name string) {
	w.WriteString("</")
	w.WriteString(name)
	w.WriteByte('>')
}

// leaf writes <name attrs>text</name>.
func (w *xmlWriter) leaf(name, text string, attrs ...string) {
	w.open(name, attrs...)
	w.WriteString(xmlEscaper.Replace(text))
	w.close(name)
}

// optional writes a leaf only when it has a value: the reference tools omit absent
// elements rather than writing them empty.
func (w *xmlWriter) optional(name, text string) {
	if text != "" {
		w.leaf(name, text)
	}
}

// sortedMappings returns the mappings sorted by virtual name (plain string order), as
// ec2-ami-tools writes them.
func sortedMappings(in []BlockDeviceMapping) []BlockDeviceMapping {
	out := append([]BlockDeviceMapping(nil), in...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Virtual < out[j].Virtual })
	return out
}

func (m *Manifest) writeMachineConfiguration(w *xmlWriter) {
	w.open("machine_configuration")
	w.leaf("architecture", m.Architecture)
	if len(m.BlockDeviceMappings) > 0 {
		w.open("block_device_mapping")
		for _, bdm := range sortedMappings(m.BlockDeviceMappings) {
			w.open("mapping")
			w.leaf("virtual", bdm.Virtual)
			w.leaf("device", bdm.Device)
			w.close("mapping")
		}
		w.close("block_device_mapping")
	}
	w.optional("kernel_id", m.KernelID)
	w.optional("ramdisk_id", m.RamdiskID)
	if len(m.ProductCodes) > 0 {
		w.open("product_codes")
		for _, c := range m.ProductCodes {
			w.leaf("product_code", c)
		}
		w.close("product_codes")
	}
	w.close("machine_configuration")
}

func (m *Manifest) writeImage(w *xmlWriter) {
	w.open("image")
	w.leaf("name", m.Name)
	w.leaf("user", m.User)
	w.leaf("type", m.Type)
	if len(m.Ancestors) > 0 {
		w.open("ancestry")
		for _, a := range m.Ancestors {
			w.leaf("ancestor_ami_id", a)
		}
		w.close("ancestry")
	}
	w.leaf("digest", m.Digest, "algorithm", "SHA1")
	w.leaf("size", strconv.FormatInt(m.Size, 10))
	w.leaf("bundled_size", strconv.FormatInt(m.BundledSize, 10))
	w.leaf("ec2_encrypted_key", m.EC2EncryptedKey, "algorithm", "AES-128-CBC")
	w.leaf("user_encrypted_key", m.UserEncryptedKey, "algorithm", "AES-128-CBC")
	w.leaf("ec2_encrypted_iv", m.EC2EncryptedIV)
	w.leaf("user_encrypted_iv", m.UserEncryptedIV)
	w.open("parts", "count", strconv.Itoa(len(m.Parts)))
	for _, p := range m.Parts {
		w.open("part", "index", strconv.Itoa(p.Index))
		w.leaf("filename", p.Filename)
		w.leaf("digest", p.Digest, "algorithm", "SHA1")
		w.close("part")
	}
	w.close("parts")
	w.close("image")
}

// Marshal returns the manifest bytes exactly as ec2-ami-tools (REXML) writes them: one
// line, single-quoted attributes, no trailing newline. The signature element is
// omitted while the manifest is unsigned.
func (m *Manifest) Marshal() []byte {
	var w xmlWriter
	w.WriteString("<?xml version='1.0'?>")
	w.open("manifest")
	w.leaf("version", m.Version)
	w.open("bundler")
	w.leaf("name", m.Bundler.Name)
	w.leaf("version", m.Bundler.Version)
	w.leaf("release", m.Bundler.Release)
	w.close("bundler")
	m.writeMachineConfiguration(&w)
	m.writeImage(&w)
	w.optional("signature", m.Signature)
	w.close("manifest")
	return w.Bytes()
}

// SignedBytes is what the signature covers: the serialized <machine_configuration>
// and <image> elements, adjacent, as they appear in Marshal's output.
func (m *Manifest) SignedBytes() []byte {
	var w xmlWriter
	m.writeMachineConfiguration(&w)
	m.writeImage(&w)
	return w.Bytes()
}

// Sign sets Signature: RSASSA-PKCS1-v1_5 with SHA-1 over SignedBytes by the user's
// private key, lowercase hex.
func (m *Manifest) Sign(priv *rsa.PrivateKey) error {
	sum := sha1.Sum(m.SignedBytes())
	sig, err := rsa.SignPKCS1v15(nil, priv, crypto.SHA1, sum[:])
	if err != nil {
		return fmt.Errorf("signing manifest: %w", err)
	}
	m.Signature = hex.EncodeToString(sig)
	return nil
}

// ErrSignature is returned (wrapped) by VerifySignature when the signature does not
// match.
var ErrSignature = errors.New("manifest signature does not match")

// VerifySignature checks Signature against pub over SignedBytes.
func (m *Manifest) VerifySignature(pub *rsa.PublicKey) error {
	if m.Signature == "" {
		return fmt.Errorf("manifest has no <signature>: %w", ErrSignature)
	}
	sig, err := hex.DecodeString(m.Signature)
	if err != nil {
		return fmt.Errorf("<signature> is not hex: %w", ErrSignature)
	}
	sum := sha1.Sum(m.SignedBytes())
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA1, sum[:], sig); err != nil {
		return fmt.Errorf("%w the certificate: the manifest was changed after signing or signed with another key", ErrSignature)
	}
	return nil
}

var (
	reVirtual   = regexp.MustCompile(`^(ami|root|swap|ephemeral[0-9]{1,2})$`)
	reAccount   = regexp.MustCompile(`^[0-9]{12}$`)
	reSHA1Hex   = regexp.MustCompile(`^[0-9a-f]{40}$`)
	reLowerHex  = regexp.MustCompile(`^([0-9a-f]{2})+$`)
	reResources = regexp.MustCompile(`^[a-z]{3}-[0-9a-f]{8,17}$`)
)

// checkText rejects values that REXML would not round-trip byte for byte (control
// characters) and values that are not valid UTF-8.
func checkText(elem, s string) error {
	if !isPrintableUTF8(s) {
		return fmt.Errorf("manifest <%s>: contains control characters or invalid UTF-8", elem)
	}
	return nil
}

func isPrintableUTF8(s string) bool {
	for _, r := range s {
		if r == 0xFFFD || r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// CheckBaseName reports whether name is usable as a part or image file name: a plain
// base name, never a path. what names the element or flag for the error.
func CheckBaseName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s: empty file name", what)
	case name == "." || name == "..":
		return fmt.Errorf("%s: %q is not a file name", what, name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%s: %q is not a plain file name (no '/', '\\' or NUL allowed)", what, name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%s: %q contains '..'", what, name)
	case !isPrintableUTF8(name):
		return fmt.Errorf("%s: %q contains control characters", what, name)
	}
	return nil
}

// Validate checks that every field holds a value EC2 and the reference tools accept
// and that the parts are consistent. It does not require a signature.
func (m *Manifest) Validate() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("manifest <version>: %q, want %s", m.Version, ManifestVersion)
	}
	for _, f := range []struct{ elem, v string }{
		{"bundler/name", m.Bundler.Name}, {"bundler/version", m.Bundler.Version}, {"bundler/release", m.Bundler.Release},
	} {
		if f.v == "" {
			return fmt.Errorf("manifest <%s>: empty", f.elem)
		}
		if err := checkText(f.elem, f.v); err != nil {
			return err
		}
	}
	if m.Architecture != "i386" && m.Architecture != "x86_64" {
		return fmt.Errorf("manifest <architecture>: %q, want i386 or x86_64", m.Architecture)
	}
	seen := map[string]bool{}
	for _, bdm := range m.BlockDeviceMappings {
		if !reVirtual.MatchString(bdm.Virtual) {
			return fmt.Errorf("manifest <block_device_mapping>: virtual name %q, want ami, root, swap or ephemeralN", bdm.Virtual)
		}
		if seen[bdm.Virtual] {
			return fmt.Errorf("manifest <block_device_mapping>: virtual name %q mapped twice", bdm.Virtual)
		}
		seen[bdm.Virtual] = true
		if bdm.Device == "" || strings.ContainsAny(bdm.Device, " \t") || !isPrintableUTF8(bdm.Device) || len(bdm.Device) > 64 {
			return fmt.Errorf("manifest <block_device_mapping>: device %q for %s is not a device name", bdm.Device, bdm.Virtual)
		}
	}
	if m.KernelID != "" && !reResources.MatchString(m.KernelID) {
		return fmt.Errorf("manifest <kernel_id>: %q is not an id like aki-12345678", m.KernelID)
	}
	if m.RamdiskID != "" && !reResources.MatchString(m.RamdiskID) {
		return fmt.Errorf("manifest <ramdisk_id>: %q is not an id like ari-12345678", m.RamdiskID)
	}
	for _, c := range m.ProductCodes {
		if c == "" || len(c) > 64 {
			return fmt.Errorf("manifest <product_code>: %q is not a product code", c)
		}
		if err := checkText("product_code", c); err != nil {
			return err
		}
	}
	if err := CheckBaseName("manifest <name>", m.Name); err != nil {
		return err
	}
	if !reAccount.MatchString(m.User) {
		return fmt.Errorf("manifest <user>: %q, want a 12-digit AWS account id without hyphens", m.User)
	}
	if m.Type != "machine" && m.Type != "kernel" && m.Type != "ramdisk" {
		return fmt.Errorf("manifest <type>: %q, want machine", m.Type)
	}
	for _, a := range m.Ancestors {
		if !reResources.MatchString(a) {
			return fmt.Errorf("manifest <ancestor_ami_id>: %q is not an AMI id", a)
		}
	}
	if !reSHA1Hex.MatchString(m.Digest) {
		return fmt.Errorf("manifest <digest>: %q is not a lowercase hex SHA-1", m.Digest)
	}
	if m.Size <= 0 || m.Size > maxManifestImageSize {
		return fmt.Errorf("manifest <size>: %d bytes, want 1 to %d (EC2 takes images up to 10 GiB)", m.Size, int64(maxManifestImageSize))
	}
	for _, f := range []struct{ elem, v string }{
		{"ec2_encrypted_key", m.EC2EncryptedKey}, {"user_encrypted_key", m.UserEncryptedKey},
		{"ec2_encrypted_iv", m.EC2EncryptedIV}, {"user_encrypted_iv", m.UserEncryptedIV},
	} {
		if !reLowerHex.MatchString(f.v) || len(f.v) > 2048 {
			return fmt.Errorf("manifest <%s>: not a lowercase hex RSA block", f.elem)
		}
	}
	if m.Signature != "" && (!reLowerHex.MatchString(m.Signature) || len(m.Signature) > 2048) {
		return fmt.Errorf("manifest <signature>: not a lowercase hex RSA signature")
	}
	n := len(m.Parts)
	if n == 0 {
		return fmt.Errorf("manifest <parts>: no parts")
	}
	if n > maxManifestParts {
		return fmt.Errorf("manifest <parts>: %d parts, more than the %d a 10 GiB image can need", n, maxManifestParts)
	}
	// Every part but the last is exactly PartSize.
	if m.BundledSize <= int64(n-1)*PartSize || m.BundledSize > int64(n)*PartSize {
		return fmt.Errorf("manifest <bundled_size>: %d bytes cannot be cut into %d parts of %d bytes", m.BundledSize, n, PartSize)
	}
	names := map[string]bool{}
	for i, p := range m.Parts {
		if p.Index != i {
			return fmt.Errorf("manifest <part index='%d'>: found at position %d, want indexes 0..%d in order", p.Index, i, n-1)
		}
		if err := CheckBaseName(fmt.Sprintf("manifest <part index='%d'> <filename>", i), p.Filename); err != nil {
			return err
		}
		if names[p.Filename] {
			return fmt.Errorf("manifest <part index='%d'> <filename>: %q is listed twice", i, p.Filename)
		}
		names[p.Filename] = true
		if !reSHA1Hex.MatchString(p.Digest) {
			return fmt.Errorf("manifest <part index='%d'> <digest>: %q is not a lowercase hex SHA-1", i, p.Digest)
		}
	}
	return nil
}
