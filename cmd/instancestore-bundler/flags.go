package main

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// usageError is a mistake in how a command was called: main exits with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == errUsage }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// option is one flag with the short and long names ec2-ami-tools users know. Go's
// flag package accepts -x, --x, -long and --long alike.
type option struct {
	short, long, arg, usage string
}

func (o option) names() string {
	var s []string
	if o.short != "" {
		s = append(s, "-"+o.short)
	}
	if o.long != "" {
		s = append(s, "--"+o.long)
	}
	return strings.Join(s, ", ")
}

// flagSet parses one command's flags and prints its help.
type flagSet struct {
	fs       *flag.FlagSet
	cmd      string // "bundle-image"
	synopsis string
	about    string
	options  []option
}

func newFlagSet(cmd, synopsis, about string) *flagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, help printed by us
	return &flagSet{fs: fs, cmd: cmd, synopsis: synopsis, about: about}
}

// stringVar defines a string option under its short and long names (either may be
// empty).
func (f *flagSet) stringVar(p *string, short, long, arg, usage string) {
	for _, n := range []string{short, long} {
		if n != "" {
			f.fs.StringVar(p, n, *p, usage)
		}
	}
	f.options = append(f.options, option{short, long, arg, usage})
}

func (f *flagSet) printHelp(w io.Writer) {
	fmt.Fprintf(w, "usage: instancestore-bundler %s %s\n\n%s\n\nflags:\n", f.cmd, f.synopsis, f.about)
	for _, o := range f.options {
		fmt.Fprintf(w, "  %s %s\n", o.names(), o.arg)
		fmt.Fprintf(w, "        %s\n", strings.ReplaceAll(o.usage, "\n", "\n        "))
	}
}

// parse parses args; -h prints the help and returns flag.ErrHelp (exit 0). Every
// error names the flag and points at the help.
func (f *flagSet) parse(args []string, stderr io.Writer) error {
	err := f.fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		f.printHelp(stderr)
		return err
	}
	if err != nil {
		return usagef("%v (run 'instancestore-bundler %s -h' for the flags)", err, f.cmd)
	}
	if f.fs.NArg() > 0 {
		return usagef("unexpected argument %q: every input is given with a flag (run 'instancestore-bundler %s -h')", f.fs.Arg(0), f.cmd)
	}
	return nil
}

// required returns a usage error when the option is empty.
func (f *flagSet) required(v, short, long, what string) error {
	if v == "" {
		return usagef("%s is required: %s", option{short: short, long: long}.names(), what)
	}
	return nil
}

// BundleFlags are the options every bundling command shares (bundle-image here,
// bundle-vol in the volume command): the account, the user's X.509 material, the EC2
// certificate, the machine configuration, and where the bundle goes. Use:
//
//	var bf BundleFlags
//	bf.Register(fs)            // after fs := newFlagSet(...)
//	... fs.parse(args, stderr)
//	setup, err := bf.Resolve(stderr)   // loads keys, checks every value
//	res, err := writeBundle(ctx, img, setup, stdout, stderr)
type BundleFlags struct {
	User                string // -u/--user: 12-digit account id, hyphens allowed
	Cert, PrivateKey    string // -c/--cert, -k/--privatekey: user X.509 PEM files
	EC2Cert, Region     string // --ec2cert PEM | --region REGION
	Arch                string // -r/--arch
	Kernel, Ramdisk     string // --kernel, --ramdisk
	BlockDeviceMapping  string // -B/--block-device-mapping virtual=device,...
	ProductCodes        string // --productcodes code1,code2
	Prefix, Destination string // -p/--prefix, -d/--destination
	Level               string // --level: gzip level 1-9
}

// Register defines the shared options on fs.
func (b *BundleFlags) Register(f *flagSet) {
	b.Arch = "x86_64"
	b.Destination = "."
	f.stringVar(&b.User, "u", "user", "ACCOUNT_ID", "your 12-digit AWS account id (hyphens allowed); required")
	f.stringVar(&b.Cert, "c", "cert", "PEM", "your X.509 certificate (with -k). Without -c/-k a throw-away key pair is used\nand the bundle can never be unbundled by you")
	f.stringVar(&b.PrivateKey, "k", "privatekey", "PEM", "the private key of -c (PKCS#1 or PKCS#8 PEM); signs the manifest")
	f.stringVar(&b.EC2Cert, "", "ec2cert", "PEM", "EC2's certificate to wrap the bundle key with (overrides --region)")
	f.stringVar(&b.Region, "", "region", "REGION", "pick EC2's embedded certificate for this region (default: commercial AWS;\ncn-* and us-gov-* regions have their own)")
	f.stringVar(&b.Arch, "r", "arch", "ARCH", "i386 or x86_64 (default x86_64)")
	f.stringVar(&b.Kernel, "", "kernel", "AKI", "kernel id for the manifest (aki-...)")
	f.stringVar(&b.Ramdisk, "", "ramdisk", "ARI", "ramdisk id for the manifest (ari-...)")
	f.stringVar(&b.BlockDeviceMapping, "B", "block-device-mapping", "MAPS", "default block device mapping: virtual=device pairs separated by commas,\ne.g. ami=sda1,root=/dev/sda1,ephemeral0=sdb")
	f.stringVar(&b.ProductCodes, "", "productcodes", "CODES", "product codes separated by commas")
	f.stringVar(&b.Prefix, "p", "prefix", "NAME", "bundle name: file prefix of the parts and manifest (default: the image's file name)")
	f.stringVar(&b.Destination, "d", "destination", "DIR", "directory for the parts and the manifest (default: current directory)")
	f.stringVar(&b.Level, "", "level", "N", fmt.Sprintf("gzip level from 1 (fastest, largest) to 9 (smallest, slowest); default %d,\nwithin 5%% of gzip -9's size (bench/README.md has the table)", bundle.DefaultLevel))
}

// level parses --level (0 when not given: bundle.DefaultLevel).
func (b *BundleFlags) level() (int, error) {
	if b.Level == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(b.Level)
	if err != nil || n < 1 || n > 9 {
		return 0, usagef("--level %q: give a gzip level from 1 (fastest) to 9 (smallest); the default is %d", b.Level, bundle.DefaultLevel)
	}
	return n, nil
}

// BundleSetup is everything resolved from BundleFlags that a bundle needs.
type BundleSetup struct {
	Manifest    bundle.ManifestConfig
	EC2Cert     *x509.Certificate
	EC2CertName string // where EC2Cert came from, for the summary
	UserCert    *x509.Certificate
	UserKey     *rsa.PrivateKey
	Throwaway   bool // UserCert/UserKey were generated: nobody can unbundle later
	Prefix      string
	Destination string
	Level       int // gzip level; 0 is bundle.DefaultLevel
}

// Resolve checks every option and loads the key material. When no user certificate
// is given it makes a throw-away pair and says on stderr what that means.
func (b *BundleFlags) Resolve(stderr io.Writer) (*BundleSetup, error) {
	s := &BundleSetup{Prefix: b.Prefix, Destination: b.Destination}
	var err error
	if s.Level, err = b.level(); err != nil {
		return nil, err
	}
	user := bundle.NormalizeAccountID(strings.TrimSpace(b.User))
	switch {
	case b.User == "":
		return nil, usagef("-u, --user is required: give your 12-digit AWS account id")
	case len(user) != 12 || strings.Trim(user, "0123456789") != "":
		return nil, usagef("-u, --user %q is not an AWS account id: want 12 digits (hyphens are removed)", b.User)
	}
	s.Manifest.User = user
	if b.Arch != "i386" && b.Arch != "x86_64" {
		return nil, usagef("-r, --arch %q: want i386 or x86_64", b.Arch)
	}
	s.Manifest.Architecture = b.Arch
	s.Manifest.KernelID, s.Manifest.RamdiskID = b.Kernel, b.Ramdisk
	bdm, err := parseBlockDeviceMapping(b.BlockDeviceMapping)
	if err != nil {
		return nil, err
	}
	s.Manifest.BlockDeviceMappings = bdm
	for _, c := range strings.Split(b.ProductCodes, ",") {
		if c = strings.TrimSpace(c); c != "" {
			s.Manifest.ProductCodes = append(s.Manifest.ProductCodes, c)
		}
	}
	// Let Validate judge kernel, ramdisk, mappings and codes with the same rules as a
	// parsed manifest, and name the flag.
	if err := checkManifestConfig(s.Manifest); err != nil {
		return nil, err
	}

	switch {
	case b.EC2Cert != "" && b.Region != "":
		return nil, usagef("--ec2cert and --region both given: use one (--ec2cert wins over the embedded certificate of --region)")
	case b.EC2Cert != "":
		if s.EC2Cert, err = bundle.LoadCertificate(b.EC2Cert); err != nil {
			return nil, fmt.Errorf("--ec2cert: %w", err)
		}
		s.EC2CertName = b.EC2Cert
	default:
		if b.Region != "" && !reRegion.MatchString(b.Region) {
			return nil, usagef("--region %q is not an AWS region name like us-east-1", b.Region)
		}
		if s.EC2Cert, err = bundle.EC2Certificate(b.Region); err != nil {
			return nil, fmt.Errorf("--region: %w", err)
		}
		s.EC2CertName = "embedded " + bundle.EC2CertificateFile(b.Region)
	}
	if _, err := bundle.CertificateKey(s.EC2Cert); err != nil {
		return nil, fmt.Errorf("EC2 certificate %s: %w", s.EC2CertName, err)
	}

	switch {
	case b.Cert == "" && b.PrivateKey == "":
		if s.UserCert, s.UserKey, err = bundle.NewThrowawayUser(); err != nil {
			return nil, err
		}
		s.Throwaway = true
		fmt.Fprintln(stderr, "note: no -c/-k given: using a throw-away key pair. EC2 can register this bundle,\n"+
			"      but nobody (you included) can unbundle it later. Give -c and -k to keep that ability.")
	case b.Cert == "":
		return nil, usagef("-k, --privatekey given without -c, --cert: give both (or neither for a throw-away pair)")
	case b.PrivateKey == "":
		return nil, usagef("-c, --cert given without -k, --privatekey: the key signs the manifest; give both (or neither)")
	default:
		if s.UserCert, err = bundle.LoadCertificate(b.Cert); err != nil {
			return nil, fmt.Errorf("-c, --cert: %w", err)
		}
		if s.UserKey, err = bundle.LoadPrivateKey(b.PrivateKey); err != nil {
			return nil, fmt.Errorf("-k, --privatekey: %w", err)
		}
		if err := bundle.MatchKey(s.UserCert, s.UserKey); err != nil {
			return nil, fmt.Errorf("-k, --privatekey %s: %w %s", b.PrivateKey, err, b.Cert)
		}
	}
	if s.Destination == "" {
		s.Destination = "."
	}
	if st, err := os.Stat(s.Destination); err != nil || !st.IsDir() {
		return nil, usagef("-d, --destination %s is not a directory: create it first", s.Destination)
	}
	return s, nil
}

var reRegion = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)

// parseBlockDeviceMapping reads ec2-ami-tools' "virtual=device,virtual=device".
func parseBlockDeviceMapping(s string) ([]bundle.BlockDeviceMapping, error) {
	var out []bundle.BlockDeviceMapping
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		v, d, ok := strings.Cut(pair, "=")
		if !ok || v == "" || d == "" {
			return nil, usagef("-B, --block-device-mapping: %q is not virtual=device (e.g. ami=sda1,root=/dev/sda1)", pair)
		}
		out = append(out, bundle.BlockDeviceMapping{Virtual: strings.TrimSpace(v), Device: strings.TrimSpace(d)})
	}
	return out, nil
}

// checkManifestConfig applies the manifest's validation rules to the configured
// values, reporting the flag that set them.
func checkManifestConfig(c bundle.ManifestConfig) error {
	probe := &bundle.Manifest{
		Version: bundle.ManifestVersion, Bundler: bundle.DefaultBundler, Architecture: c.Architecture,
		BlockDeviceMappings: c.BlockDeviceMappings, KernelID: c.KernelID, RamdiskID: c.RamdiskID,
		ProductCodes: c.ProductCodes, Name: "probe", User: c.User, Type: "machine",
		Digest: strings.Repeat("0", 40), Size: 1, BundledSize: 16,
		EC2EncryptedKey: "00", UserEncryptedKey: "00", EC2EncryptedIV: "00", UserEncryptedIV: "00",
		Parts: []bundle.ManifestPart{{Index: 0, Filename: "probe.part.0", Digest: strings.Repeat("0", 40)}},
	}
	err := probe.Validate()
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, f := range []struct{ elem, flag string }{
		{"block_device_mapping", "-B, --block-device-mapping"}, {"kernel_id", "--kernel"},
		{"ramdisk_id", "--ramdisk"}, {"product_code", "--productcodes"},
	} {
		if strings.Contains(msg, "<"+f.elem+">") {
			return usagef("%s: %s", f.flag, msg[strings.Index(msg, ">:")+3:])
		}
	}
	return err
}
