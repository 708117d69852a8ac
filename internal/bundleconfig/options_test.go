package bundleconfig

import (
	"regexp"
	"slices"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"
)

func TestPrepareDefaults(t *testing.T) {
	var o Options
	if errs := o.Prepare(&interpolate.Context{}); errs != nil {
		t.Fatal(errs)
	}
	if !regexp.MustCompile(`^image-[0-9]+$`).MatchString(o.BundlePrefix) {
		t.Errorf("bundle_prefix = %q, want image-<timestamp>", o.BundlePrefix)
	}
	// Off by default, like ec2-bundle-vol --no-filter.
	if o.BundleFilter != config.TriFalse {
		t.Errorf("bundle_filter = %v, want false", o.BundleFilter)
	}
	if o.AccountId != "" {
		t.Errorf("account_id = %q, want empty until the build resolves it", o.AccountId)
	}
}

func TestPrepareKeepsAndNormalizes(t *testing.T) {
	o := Options{AccountId: "1234-5678-9012", BundlePrefix: "web_1.2-x", BundleFilter: config.TriTrue}
	if errs := o.Prepare(&interpolate.Context{}); errs != nil {
		t.Fatal(errs)
	}
	if o.AccountId != "123456789012" || o.BundlePrefix != "web_1.2-x" || o.BundleFilter != config.TriTrue {
		t.Errorf("got %+v", o)
	}
}

func TestPrepareErrors(t *testing.T) {
	o := Options{AccountId: "12", BundlePrefix: "a/b"}
	var got []string
	for _, err := range o.Prepare(&interpolate.Context{}) {
		got = append(got, err.Error())
	}
	want := []string{
		`account_id must be a 12-digit AWS account ID (hyphens allowed), got "12"`,
		`bundle_prefix "a/b" may contain only letters, digits, dots, hyphens and underscores`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n got: %q\nwant: %q", got, want)
	}
}
