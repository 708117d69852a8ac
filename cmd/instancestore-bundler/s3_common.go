package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// exitCodes is the help text every S3 command ends with: scripts can trust these.
const exitCodes = "exit status: 0 done; 1 failed (S3, network, a digest or signature); 2 bad flags.\n" +
	"Credentials come only from the standard AWS chain (AWS_* environment, profile,\n" +
	"SSO, instance role); no flag takes a secret. AWS_ENDPOINT_URL_S3 selects an endpoint."

// s3Flags are the options every S3 command has, defined once here: -b
// BUCKET[/PREFIX], --region and --path-style.
type s3Flags struct {
	location, region string
	pathStyle        bool
}

// define adds them to f; where says what the bucket holds for the command.
func (s *s3Flags) define(f *flagSet, where string) {
	f.stringVar(&s.location, "b", "bucket", "BUCKET[/PREFIX]", where+"; required")
	f.stringVar(&s.region, "", "region", "REGION", "the bucket's region (default: the AWS configuration's, else us-east-1)")
	f.boolVar(&s.pathStyle, "", "path-style", "address the bucket in the URL path (S3-compatible endpoints)")
}

// check refuses a missing or malformed -b before anything else is read; what says
// what to give.
func (s *s3Flags) check(f *flagSet, what string) error {
	if err := f.required(s.location, "b", "bucket", what); err != nil {
		return err
	}
	return checkBucketFlag(s.location)
}

// open is openBucket of the flags.
func (s *s3Flags) open(ctx context.Context) (*s3bundle.Bucket, error) {
	return openBucket(ctx, s.location, s.region, s.pathStyle)
}

// bundleFlags name a bundle in its bucket: -m (its manifest) or -p (its name).
type bundleFlags struct{ manifest, prefix string }

// define adds -m, with the given placeholder and usage, and -p to f.
func (b *bundleFlags) define(f *flagSet, manifestMeta, manifestUsage string) {
	f.stringVar(&b.manifest, "m", "manifest", manifestMeta, manifestUsage)
	f.stringVar(&b.prefix, "p", "prefix", "NAME", "the bundle name (instead of -m)")
}

// name is the bundle's name (bundleNameFlag).
func (b *bundleFlags) name() (string, error) { return bundleNameFlag(b.manifest, b.prefix) }

// checkBucketFlag checks the bucket name of -b before anything else is read.
func checkBucketFlag(location string) error {
	name, _, _ := strings.Cut(strings.TrimPrefix(location, "s3://"), "/")
	if err := s3bundle.CheckBucketName(name); err != nil {
		return usagef("-b, --bucket %q: %s", location, strings.TrimPrefix(err.Error(), "s3_bucket "))
	}
	return nil
}

// openBucket parses -b bucket[/prefix] and makes the bucket client from the standard
// credential chain. pathStyle is for S3-compatible endpoints.
func openBucket(ctx context.Context, location, region string, pathStyle bool) (*s3bundle.Bucket, error) {
	location = strings.TrimPrefix(location, "s3://")
	name, prefix, _ := strings.Cut(location, "/")
	if err := s3bundle.CheckBucketName(name); err != nil {
		return nil, usagef("-b, --bucket %q: %s", location, strings.TrimPrefix(err.Error(), "s3_bucket "))
	}
	opts := []func(*awsconfig.LoadOptions) error{}
	if region != "" {
		if !reRegion.MatchString(region) {
			return nil, usagef("--region %q is not an AWS region name like us-east-1", region)
		}
		opts = append(opts, awsconfig.WithRegion(region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS credentials and configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("no AWS credentials found (environment, profile, SSO or instance role): %w", err)
	}
	if os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != "" {
		pathStyle = true // S3-compatible endpoints are reached by address
	}
	return s3bundle.New(cfg, cfg.Region, name, prefix, s3bundle.Options{PathStyle: pathStyle})
}

// readManifestFile reads and parses a local manifest.
func readManifestFile(path string) (*bundle.Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-m, --manifest: %w", err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("-m, --manifest %s: %w", path, err)
	}
	return m, nil
}

// boolVar defines a boolean option under its short and long names.
func (f *flagSet) boolVar(p *bool, short, long, usage string) {
	for _, n := range []string{short, long} {
		if n != "" {
			f.fs.BoolVar(p, n, *p, usage)
		}
	}
	f.options = append(f.options, option{short, long, "", usage})
}
