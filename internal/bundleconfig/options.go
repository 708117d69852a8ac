//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Options

// Package bundleconfig holds the bundle options that the `instancestore` builder and the
// `instancestore-bundle` provisioner share word for word: same name, type, default and
// checks. Both embed Options with `mapstructure:",squash"`, so the options keep their
// top-level names.
package bundleconfig

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"
)

// Options are the bundle options common to the builder and the provisioner.
type Options struct {
	// Your 12-digit AWS account ID (hyphens are removed), written into the bundle
	// manifest as its owner. This is not the access key. Defaults to the account of the
	// credentials in use, as reported by STS GetCallerIdentity.
	AccountId string `mapstructure:"account_id" required:"false"`
	// The bundle's name: the manifest is `<bundle_prefix>.manifest.xml` and the parts
	// `<bundle_prefix>.part.NN`. Defaults to `image-{{timestamp}}`.
	BundlePrefix string `mapstructure:"bundle_prefix" required:"false"`
	// Leave out files that usually hold secrets (`*.pem`, `*.gpg`, `*id_rsa*`,
	// `.ssh/authorized_keys`, shell history, ...). Defaults to `false`, like the
	// `ec2-bundle-vol --no-filter` that the `amazon-instance` builder ran, because the
	// filter also removes TLS certificates and apt keys the image needs; set `true` for
	// ec2-bundle-vol's default filter.
	BundleFilter config.Trilean `mapstructure:"bundle_filter" required:"false"`
}

// DefaultBundlePrefix is bundle_prefix's default, rendered when Prepare runs.
const DefaultBundlePrefix = "image-{{timestamp}}"

var (
	// ReAccountID matches an account ID once its hyphens are removed.
	ReAccountID = regexp.MustCompile(`^[0-9]{12}$`)
	// Characters EC2's manifest and S3 keys take without escaping.
	reBundlePrefix = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// Prepare applies the defaults and checks the options, returning every problem. ctx
// renders the default bundle_prefix.
func (c *Options) Prepare(ctx *interpolate.Context) []error {
	var errs []error
	if c.AccountId != "" {
		c.AccountId = strings.ReplaceAll(c.AccountId, "-", "")
		if !ReAccountID.MatchString(c.AccountId) {
			errs = append(errs, fmt.Errorf("account_id must be a 12-digit AWS account ID (hyphens allowed), got %q", c.AccountId))
		}
	}
	if c.BundlePrefix == "" {
		c.BundlePrefix = DefaultBundlePrefix
		if out, err := interpolate.Render(DefaultBundlePrefix, ctx); err == nil {
			c.BundlePrefix = out
		}
	}
	if !reBundlePrefix.MatchString(c.BundlePrefix) {
		errs = append(errs, fmt.Errorf("bundle_prefix %q may contain only letters, digits, dots, hyphens and underscores", c.BundlePrefix))
	}
	// Off by default: the filter drops TLS certificates and apt keys images need.
	if c.BundleFilter == config.TriUnset {
		c.BundleFilter = config.TriFalse
	}
	return errs
}
