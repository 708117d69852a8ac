package importpp

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

// stepBundleUpload bundles the image on this machine with the streaming writer (data
// extents only, parallel gzip, no scratch: parts go from memory to S3) and uploads the
// parts through the agent's part uploader (presigned PUTs, aws-exec-read and
// Content-MD5 signed in, retries), then signs and uploads the manifest. Its Cleanup
// deletes every object it may have stored when the run fails or is cancelled later.
type stepBundleUpload struct {
	mu     sync.Mutex
	issued map[string]bool // every object a URL was issued for
}

func (s *stepBundleUpload) issue(name string) {
	s.mu.Lock()
	s.issued[name] = true
	s.mu.Unlock()
}

// keys loads the X.509 material of the options; the defaults are the region's
// embedded EC2 certificate and a throw-away user pair.
func keys(c *Config, region string, say func(string)) (ec2Cert, userCert *x509.Certificate, userKey *rsa.PrivateKey, err error) {
	k, err := c.Options.Keys()
	if err != nil {
		return nil, nil, nil, err
	}
	ec2Cert, userCert, userKey = k.EC2Cert, k.UserCert, k.UserKey
	if ec2Cert == nil {
		if ec2Cert, err = bundle.EC2Certificate(region); err != nil {
			return nil, nil, nil, err
		}
	}
	if userCert == nil {
		userCert, userKey, err = bundle.NewThrowawayUser()
		say("No X.509 certificate given: the key is wrapped for EC2 and a throw-away certificate, so this bundle cannot be unbundled by you later (set x509_cert_path and x509_key_path to keep that ability)")
	}
	return ec2Cert, userCert, userKey, err
}

// rootDevice is the AMI's root device name.
func rootDevice(c *Config, virt string) string {
	switch {
	case c.AMIRootDevice != "":
		return c.AMIRootDevice
	case virt == "hvm":
		return "/dev/xvda"
	}
	return "/dev/sda1"
}

// amiMappings is the new AMI's block device mapping besides the root device: there is
// no instance to inherit instance store volumes from, so it is ami_block_device_mappings
// alone (agent/driver/mappings.go, the rule every component follows).
func amiMappings(c *Config) []driver.Mapping { return driver.AMIMappings(nil, c.AMIMappings) }

// manifestConfig is what the manifest says besides the bundle: owner, architecture,
// kernel and RAM disk, and the block device mappings (ami and root, then the instance
// store volumes of ami_block_device_mappings).
func manifestConfig(c *Config, account, virt string) bundle.ManifestConfig {
	mappings := driver.ManifestMappings(rootDevice(c, virt), amiMappings(c))
	mc := bundle.ManifestConfig{User: account, Architecture: c.AMIArchitecture, BlockDeviceMappings: mappings}
	if virt == "paravirtual" {
		mc.KernelID, mc.RamdiskID = c.AMIKernelId, c.AMIRamdiskId
	}
	return mc
}

func (s *stepBundleUpload) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	info := imageOf(state)
	b := bucketOf(state)
	u := ui(state)
	s.issued = map[string]bool{}

	img, err := bundle.OpenImage(info.Path)
	if err != nil {
		return haltf(state, "opening image %s: %w", info.Path, err)
	}
	defer img.Close()
	if img.Size() > bundle.MaxImageSize {
		return haltf(state, "image %s is %d MiB: EC2 registers instance store-backed images of at most 10240 MiB; shrink the image", info.Path, img.Size()>>20)
	}
	ec2Cert, userCert, userKey, err := keys(c, b.Region, u.Say)
	if err != nil {
		return halt(state, err)
	}
	manifestName := s3bundle.ManifestName(c.BundlePrefix)
	if exists, err := b.Exists(ctx, manifestName); err != nil {
		return halt(state, err)
	} else if exists {
		return haltf(state, "%s/%s already exists: a bundle of that name is there (perhaps of a registered AMI); choose another bundle_prefix or s3_prefix", b, manifestName)
	}
	key, err := bundle.NewKey()
	if err != nil {
		return halt(state, err)
	}
	packersdk.LogSecretFilter.Set(key.KeyHex(), key.IVHex())

	var data int64
	for _, e := range img.Extents() {
		data += e.Length
	}
	u.Say(fmt.Sprintf("Bundling %s (%d MiB, %d MiB of data) as %s into %s...", info.Path, img.Size()>>20, data>>20, c.BundlePrefix, b))
	start := time.Now()
	sink := presigned.NewSink(ctx, presigned.Config{
		Presign: func(ctx context.Context, p *bundle.Part, _ bool) (*presigned.Request, error) {
			s.issue(p.Name)
			r, err := b.PresignPart(ctx, p.Name, p.MD5)
			if err == nil {
				hideURL(r.URL)
			}
			return r, err
		},
		Concurrency: c.UploadConcurrency,
		Retrying: func(p *bundle.Part, attempt int, err error) {
			u.Say(fmt.Sprintf("Retrying the upload of %s (attempt %d): %s", p.Name, attempt+1, err))
		},
	})
	var last time.Time
	res, err := bundle.Write(ctx, img, bundle.WriterConfig{
		Name: c.BundlePrefix, Key: key, Level: c.CompressionLevel,
		Progress: func(p bundle.Progress) {
			if time.Since(last) >= 10*time.Second {
				last = time.Now()
				u.Message(fmt.Sprintf("%d of %d MiB read, %d parts", p.BytesRead>>20, p.BytesTotal>>20, p.Parts))
			}
		},
	}, sink)
	if err != nil {
		return haltf(state, "bundling %s: %w", info.Path, err)
	}
	m, err := bundle.NewManifest(res, manifestConfig(c, accountID(state), info.Virtualization), key, ec2Cert, userCert)
	if err != nil {
		return haltf(state, "building the manifest: %w", err)
	}
	if err := m.Sign(userKey); err != nil {
		return haltf(state, "signing the manifest: %w", err)
	}
	s.issue(manifestName)
	loc, err := b.PutManifest(ctx, m)
	if err != nil {
		return halt(state, err)
	}
	objs := make([]string, 0, len(res.Parts)+1)
	for _, p := range res.Parts {
		objs = append(objs, p.Name)
	}
	objs = append(objs, manifestName)
	state.Put(keyBundle, &uploadedBundle{ManifestLocation: loc, Objects: objs})
	elapsed := time.Since(start)
	u.Say(fmt.Sprintf("Bundle uploaded: %d parts, %d MiB, manifest s3://%s (%s, %.0f MB/s of data)",
		len(res.Parts), res.BundledSize>>20, loc, elapsed.Round(time.Millisecond), float64(data)/1e6/elapsed.Seconds()))
	return multistep.ActionContinue
}

// Cleanup deletes the bundle when the run did not finish: no AMI uses it. Only the
// names URLs were issued for: the prefix may hold other bundles. Twice, after a pause:
// a PUT in flight when the run stopped may still land.
func (s *stepBundleUpload) Cleanup(state multistep.StateBag) {
	if !failed(state) || len(s.issued) == 0 {
		return
	}
	if ami := steps.BundleInUse(state); ami != "" {
		ui(state).Error(fmt.Sprintf("Keeping the bundle in %s: AMI %s could not be deregistered and still uses it", bucketOf(state), ami))
		return
	}
	names := make([]string, 0, len(s.issued))
	for n := range s.issued {
		names = append(names, n)
	}
	sort.Strings(names)
	b := bucketOf(state)
	ui(state).Say(fmt.Sprintf("Deleting the %d bundle objects uploaded to %s (the import did not finish)...", len(names), b))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < 2; i++ {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		if err := b.Delete(ctx, names); err != nil {
			ui(state).Error(fmt.Sprintf("Could not delete the bundle's objects under %s, delete them yourself: %s", b, err))
			return
		}
	}
}

// hideURL keeps a presigned URL and its signature out of Packer's log and UI.
func hideURL(u string) {
	secrets := []string{u}
	if pu, err := url.Parse(u); err == nil {
		for _, k := range []string{"X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential"} {
			if v := pu.Query().Get(k); v != "" {
				secrets = append(secrets, v, url.QueryEscape(v))
			}
		}
		secrets = append(secrets, pu.RawQuery)
	}
	packersdk.LogSecretFilter.Set(secrets...)
}
