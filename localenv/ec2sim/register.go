package ec2sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func registerImage(c *call) (metaSetter, error) {
	name := c.p.get("Name")
	if name == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter name")
	}
	if !amiNamePattern.MatchString(name) {
		return nil, apiErr(400, "InvalidAMIName.Malformed", "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/' and '_'")
	}
	if len(c.p.get("Description")) > 255 {
		return nil, apiErr(400, "InvalidParameterValue", "AMI descriptions are at most 255 characters")
	}
	virt := c.p.get("VirtualizationType")
	if virt == "" {
		virt = "paravirtual" // the API's default
	}
	if virt != "hvm" && virt != "paravirtual" {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter virtualizationType is invalid. Valid values: hvm, paravirtual", virt)
	}
	arch := c.p.get("Architecture")
	if arch != "" && arch != "i386" && arch != "x86_64" && arch != "arm64" {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter architecture is invalid. Valid values: i386, x86_64, arm64", arch)
	}
	kernel, ramdisk := c.p.get("KernelId"), c.p.get("RamdiskId")
	if virt == "hvm" && (kernel != "" || ramdisk != "") {
		return nil, apiErr(400, "InvalidParameterCombination", "Kernel and ramdisk IDs cannot be specified for an HVM image")
	}
	ena, _, err := c.p.boolean("EnaSupport")
	if err != nil {
		return nil, err
	}
	if ena && virt != "hvm" {
		return nil, apiErr(400, "InvalidParameterCombination", "Enhanced networking with the Elastic Network Adapter (ENA) is not supported for paravirtual AMIs")
	}
	sriov := c.p.get("SriovNetSupport")
	if sriov != "" && sriov != "simple" {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter sriovNetSupport is invalid. Valid value: simple", sriov)
	}
	if sriov != "" && virt != "hvm" {
		return nil, apiErr(400, "InvalidParameterCombination", "SriovNetSupport is only supported for HVM AMIs")
	}
	bootMode := c.p.get("BootMode")
	if bootMode != "" && bootMode != "legacy-bios" && bootMode != "uefi" && bootMode != "uefi-preferred" {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter bootMode is invalid", bootMode)
	}
	if bootMode == "uefi" && virt != "hvm" {
		return nil, apiErr(400, "InvalidParameterCombination", "UEFI boot mode requires HVM")
	}
	// TpmSupport, UefiData and ImdsSupport as EC2 takes them. NitroTPM needs UEFI
	// boot and an EBS-backed AMI: EC2 refuses it for an instance store-backed one
	// (NitroTPM prerequisites), and UEFI variables only mean something with UEFI boot.
	tpm := c.p.get("TpmSupport")
	if tpm != "" && tpm != "v2.0" {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter tpmSupport is invalid. Valid value: v2.0", tpm)
	}
	if tpm != "" && bootMode != "uefi" {
		return nil, apiErr(400, "InvalidParameterCombination", "NitroTPM support (tpmSupport v2.0) requires the uefi boot mode")
	}
	uefiData := c.p.get("UefiData")
	if uefiData != "" && bootMode != "uefi" && bootMode != "uefi-preferred" {
		return nil, apiErr(400, "InvalidParameterCombination", "UEFI data can only be set for an AMI with the uefi or uefi-preferred boot mode")
	}
	imds := c.p.get("ImdsSupport")
	if imds != "" && imds != "v2.0" {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter imdsSupport is invalid. Valid value: v2.0", imds)
	}
	rootDev := c.p.get("RootDeviceName")
	if rootDev != "" && !validDeviceName(rootDev) {
		return nil, apiErr(400, "InvalidBlockDeviceMapping", "Invalid device name %s", rootDev)
	}
	bds, err := c.parseBlockDevices()
	if err != nil {
		return nil, err
	}
	tags, err := c.p.tagSpecs("image")
	if err != nil {
		return nil, err
	}
	loc := c.p.get("ImageLocation")
	if loc == "" {
		// No manifest: an EBS-backed AMI from snapshots (ebs_register.go).
		return c.registerEBS(&image{name: name, description: c.p.get("Description"), arch: arch, virt: virt,
			kernelID: kernel, ramdiskID: ramdisk, enaSupport: ena, sriov: sriov, bootMode: bootMode, tpmSupport: tpm,
			uefiData: uefiData, imdsSupport: imds, rootDeviceName: rootDev, blockDevices: bds}, tags)
	}
	for _, b := range bds {
		if b.EBS {
			return nil, apiErr(400, "InvalidBlockDeviceMapping", "EBS block device mappings are not supported for instance store-backed AMIs (%s)", b.DeviceName)
		}
	}
	if tpm != "" {
		return nil, apiErr(400, "InvalidParameterCombination", "NitroTPM (tpmSupport) is not supported for instance store-backed AMIs")
	}
	if rootDev == "" {
		rootDev = "/dev/sda1"
	}

	st := c.s.st
	st.mu.Lock()
	if err := c.checkNameFree(name); err != nil {
		st.mu.Unlock()
		return nil, err
	}
	// The name is held by a pending image while the bundle is read, so a concurrent
	// RegisterImage with the same name gets InvalidAMIName.Duplicate, as on EC2.
	im := &image{id: newID("ami"), name: name, description: c.p.get("Description"), location: loc, region: c.region,
		owner: st.account, state: "pending", arch: arch, virt: virt, rootDeviceType: "instance-store", rootDeviceName: rootDev,
		kernelID: kernel, ramdiskID: ramdisk, enaSupport: ena, sriov: sriov, bootMode: bootMode, tpmSupport: tpm, uefiData: uefiData, imdsSupport: imds, blockDevices: bds,
		created: time.Now().UTC(), seq: st.next()}
	st.images[im.id] = im
	st.mu.Unlock()

	// The bundle is read on the server's context, not the caller's: EC2 has no
	// rollback when a client goes away mid-call, so neither does the simulator.
	imgPath, m, err := c.s.unbundleFromS3(c.s.ctx, c.region, loc, im.id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		delete(st.images, im.id)
		return nil, err
	}
	if im.arch == "" {
		im.arch = m.Architecture
	}
	if im.kernelID == "" && virt == "paravirtual" {
		im.kernelID = m.KernelID
	}
	if im.ramdiskID == "" && virt == "paravirtual" {
		im.ramdiskID = m.RamdiskID
	}
	im.productCodes = m.ProductCodes
	if len(im.blockDevices) == 0 {
		for _, b := range m.BlockDeviceMappings {
			if strings.HasPrefix(b.Virtual, "ephemeral") {
				dev := b.Device
				if !strings.HasPrefix(dev, "/dev/") {
					dev = "/dev/" + dev
				}
				im.blockDevices = append(im.blockDevices, blockDevice{DeviceName: dev, VirtualName: b.Virtual})
			}
		}
	}
	im.root = RootSource{Image: imgPath}
	// pending for a while, then available, as EC2 does, so waiters' pending path runs.
	c.s.becomeAvailable(im)
	st.setTags(im.id, tags)
	c.s.cfg.Logf("ec2sim: registered %s (%s) from s3://%s, image %s", im.id, name, loc, imgPath)
	return &struct {
		ResponseMeta
		ImageID string `xml:"imageId"`
	}{ImageID: im.id}, nil
}

// becomeAvailable turns a pending image available after Config.PendingTime. Caller
// holds mu.
func (s *Server) becomeAvailable(im *image) {
	if s.cfg.PendingTime < 0 {
		im.state = "available"
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(s.cfg.PendingTime)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		s.st.mu.Lock()
		defer s.st.mu.Unlock()
		if im.state == "pending" {
			im.state = "available"
		}
	}()
}

// invalidManifest is EC2's answer to every problem with the bundle it reads.
func invalidManifest(format string, args ...any) *APIError {
	return apiErr(400, "InvalidManifest", format, args...)
}

// s3Failure words an S3 error the way EC2 passes it on.
func s3Failure(what, bucket, key string, err error) *APIError {
	var se *S3Error
	if errors.As(err, &se) {
		return invalidManifest("HTTP %d (%s) for URL s3://%s/%s: EC2 could not read the %s: %s", se.Status, se.Code, bucket, key, what, se.Message)
	}
	return invalidManifest("reading the %s s3://%s/%s: %v", what, bucket, key, err)
}

// unbundleFromS3 does what EC2 does with an instance-store ImageLocation: read the
// manifest as the EC2 principal, check it, unwrap the key with EC2's private key, read
// and check every part, and keep the image. It returns the image file.
func (s *Server) unbundleFromS3(ctx context.Context, region, loc, amiID string) (string, *bundle.Manifest, error) {
	bucket, key, ok := strings.Cut(strings.TrimPrefix(loc, "/"), "/")
	if !ok || bucket == "" || key == "" || strings.HasPrefix(loc, "s3://") || strings.HasPrefix(loc, "http") {
		return "", nil, invalidManifest("Invalid manifest location %q: expecting bucket/path/name.manifest.xml", loc)
	}
	if s.cfg.S3 == nil {
		return "", nil, apiErr(400, "Unsupported", "this simulator was started without S3: instance-store registration needs it")
	}
	bregion, err := s.cfg.S3.BucketRegion(ctx, bucket)
	if err != nil {
		return "", nil, s3Failure("manifest", bucket, key, err)
	}
	if bregion != region {
		return "", nil, invalidManifest("The manifest bucket %s is in region %s; instance store-backed AMIs must be registered in the bucket's region, not %s", bucket, bregion, region)
	}
	rc, err := s.cfg.S3.GetAsEC2(ctx, bucket, key)
	if err != nil {
		return "", nil, s3Failure("manifest", bucket, key, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, 8<<20))
	rc.Close()
	if err != nil {
		return "", nil, s3Failure("manifest", bucket, key, err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return "", nil, invalidManifest("Failed to parse the manifest s3://%s/%s: %v", bucket, key, err)
	}
	if err := m.Validate(); err != nil {
		return "", nil, invalidManifest("Invalid manifest s3://%s/%s: %v", bucket, key, err)
	}
	if bundle.NormalizeAccountID(m.User) != s.cfg.AccountID {
		return "", nil, invalidManifest("The manifest's <user> %s is not the account %s that registers it", m.User, s.cfg.AccountID)
	}
	for _, b := range m.BlockDeviceMappings {
		if !validDeviceName(b.Device) {
			return "", nil, invalidManifest("Invalid device name %s for %s in the manifest's block_device_mapping", b.Device, b.Virtual)
		}
	}
	if m.Size > bundle.MaxImageSize {
		return "", nil, invalidManifest("The image is %d bytes; instance store-backed AMIs are limited to %d bytes", m.Size, int64(bundle.MaxImageSize))
	}
	keyFile, err := s.opensslKeyFile()
	if err != nil {
		return "", nil, fmt.Errorf("writing the EC2 key for openssl: %w", err)
	}
	keyHex, err := opensslUnwrap(ctx, keyFile, m.EC2EncryptedKey)
	var ivHex string
	if err == nil {
		ivHex, err = opensslUnwrap(ctx, keyFile, m.EC2EncryptedIV)
	}
	if err != nil {
		return "", nil, invalidManifest("Unable to decrypt the manifest's ec2_encrypted_key with the EC2 key of %s: the bundle was not made with this region's EC2 certificate (%s): %v", region, s.ec2Key.certPath, err)
	}
	facts := manifestFacts{name: m.Name, digest: m.Digest, size: m.Size, bundledSize: m.BundledSize}
	for _, p := range m.Parts {
		facts.parts = append(facts.parts, struct{ name, digest string }{p.Filename, p.Digest})
	}
	imgPath := filepath.Join(s.cfg.DataDir, "images", amiID+".img")
	src := &s3PartSource{ctx: ctx, s3: s.cfg.S3, bucket: bucket, dir: path.Dir(key)}
	if err := opensslUnbundle(ctx, keyHex, ivHex, facts, src, imgPath); err != nil {
		os.Remove(imgPath)
		if src.err != nil {
			return "", nil, src.err
		}
		return "", nil, invalidManifest("The bundle at s3://%s/%s failed its checks: %v", bucket, key, err)
	}
	return imgPath, m, nil
}

// s3PartSource reads parts next to the manifest, as the EC2 principal.
type s3PartSource struct {
	ctx         context.Context
	s3          ObjectReader
	bucket, dir string
	err         *APIError // the S3 failure, worded for EC2
}

func (p *s3PartSource) OpenPart(name string) (io.ReadCloser, error) {
	key := name
	if p.dir != "." && p.dir != "" {
		key = p.dir + "/" + name
	}
	rc, err := p.s3.GetAsEC2(p.ctx, p.bucket, key)
	if err != nil {
		p.err = s3Failure("part", p.bucket, key, err)
		return nil, p.err
	}
	return rc, nil
}
