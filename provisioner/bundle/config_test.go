package bundle

import (
	"strings"
	"testing"
)

func minimal() map[string]interface{} {
	return map[string]interface{}{
		"s3_bucket":                  "my-bundles",
		"region":                     "us-east-1",
		"access_key":                 "AKIAEXAMPLE",
		"secret_key":                 "secret",
		"skip_credential_validation": true,
	}
}

func TestPrepare(t *testing.T) {
	for name, tc := range map[string]struct {
		set  map[string]interface{}
		want string // "" = valid
	}{
		"minimal":               {nil, ""},
		"no bucket":             {map[string]interface{}{"s3_bucket": ""}, "s3_bucket is required"},
		"bad bucket":            {map[string]interface{}{"s3_bucket": "My_Bucket"}, "not a valid bucket name"},
		"bad prefix":            {map[string]interface{}{"s3_prefix": "a//b"}, "not a clean S3 key prefix"},
		"bad bundle prefix":     {map[string]interface{}{"bundle_prefix": "a b"}, "bundle_prefix"},
		"bad account":           {map[string]interface{}{"account_id": "1234"}, "12-digit"},
		"hyphenated account":    {map[string]interface{}{"account_id": "1234-5678-9012"}, ""},
		"cert without key":      {map[string]interface{}{"x509_cert_path": "/x"}, "go together"},
		"missing ec2 cert":      {map[string]interface{}{"ec2_cert_path": "/nonexistent.pem"}, "ec2_cert_path"},
		"relative image":        {map[string]interface{}{"bundle_image": "disk.img"}, "bundle_image"},
		"image and volume opts": {map[string]interface{}{"bundle_image": "/disk.img", "bundle_size": 100}, "apply to imaging a volume only"},
		"relative destination":  {map[string]interface{}{"bundle_destination": "tmp"}, "bundle_destination"},
		"root destination":      {map[string]interface{}{"bundle_destination": "/"}, "must not be /"},
		"too big":               {map[string]interface{}{"bundle_size": 20000}, "bundle_size"},
		"relative exclude":      {map[string]interface{}{"bundle_exclude": []string{"var"}}, `bundle_exclude "var" must be an absolute path on the instance`},
		"bad partition":         {map[string]interface{}{"bundle_partition": "dos"}, "bundle_partition"},
		"bad arch":              {map[string]interface{}{"ami_architecture": "arm64"}, "ami_architecture"},
		"bad virt":              {map[string]interface{}{"ami_virtualization_type": "pv"}, "ami_virtualization_type"},
		"description alone":     {map[string]interface{}{"ami_description": "x"}, "needs ami_name"},
		"concurrency":           {map[string]interface{}{"upload_concurrency": 100}, "upload_concurrency"},
		"missing agent":         {map[string]interface{}{"agent_binary": "/nonexistent"}, "agent_binary"},
	} {
		t.Run(name, func(t *testing.T) {
			raw := minimal()
			for k, v := range tc.set {
				raw[k] = v
			}
			var c Config
			err := c.Prepare(raw)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPrepareDefaults(t *testing.T) {
	var c Config
	if err := c.Prepare(minimal()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.S3Prefix, "instancestore/") || !strings.HasPrefix(c.BundlePrefix, "image-") ||
		c.AMIArchitecture != "x86_64" || c.UploadConcurrency != 4 || !c.BundleFilter.False() || c.AMIVirtType != "hvm" {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestPrepareCollectsAllErrors(t *testing.T) {
	raw := minimal()
	raw["s3_bucket"] = ""
	raw["ami_architecture"] = "arm"
	raw["bundle_partition"] = "dos"
	var c Config
	err := c.Prepare(raw)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"s3_bucket", "ami_architecture", "bundle_partition"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %s: %v", w, err)
		}
	}
}
