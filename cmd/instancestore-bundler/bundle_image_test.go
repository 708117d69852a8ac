package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// buildBundler builds the command into a temporary directory.
func buildBundler(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "instancestore-bundler")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type result struct {
	code           int
	stdout, stderr string
}

func runBin(t *testing.T, bin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running %s: %v", bin, err)
	}
	return r
}

func (r result) must(t *testing.T, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	all := r.stdout + r.stderr
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Fatalf("output does not mention %q\nstdout:\n%s\nstderr:\n%s", w, r.stdout, r.stderr)
		}
	}
}

// writeUser stores a fresh user certificate and its key (PKCS#8, as openssl writes
// today).
func writeUser(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	cert, priv, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "pk.pem")
	writeFile(t, certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	writeFile(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return certPath, keyPath
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// makeTestImage makes a sparse image: 12 MiB of random data (two parts) and a little
// text in a 48 MiB file.
func makeTestImage(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(48 << 20); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 12<<20)
	rand.Read(data)
	if _, err := f.WriteAt(data, 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("hello, instance store\n", 1000)), 40<<20); err != nil {
		t.Fatal(err)
	}
}

func sha1Of(t *testing.T, path string) [20]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [20]byte
	copy(s[:], h.Sum(nil))
	return s
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestCLIEndToEnd runs the built binary: bundle-image, verify, unbundle, and the
// failures a user meets.
func TestCLIEndToEnd(t *testing.T) {
	bin := buildBundler(t)
	dir := t.TempDir()
	cert, key := writeUser(t, dir)
	img := filepath.Join(dir, "disk.img")
	makeTestImage(t, img)
	out, rest := filepath.Join(dir, "out"), filepath.Join(dir, "rest")
	for _, d := range []string{out, rest} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	manifest := filepath.Join(out, "web.manifest.xml")

	t.Run("bundle-image", func(t *testing.T) {
		r := runBin(t, bin, "bundle-image", "-i", img, "-u", "1234-5678-9012", "-p", "web", "-d", out,
			"-c", cert, "-k", key, "-r", "x86_64", "--region", "cn-north-1",
			"-B", "root=/dev/sda1,ami=sda1,ephemeral0=sdb", "--kernel", "aki-12345678", "--productcodes", "ABC123,DEF456")
		r.must(t, 0, "bundle     web", "parts      2 in", "cert-ec2-cn-north-1.pem", "48.0 MiB apparent")
		if strings.Contains(r.stderr, "throw-away") {
			t.Errorf("throw-away note with -c/-k given: %s", r.stderr)
		}
		for _, f := range []string{"web.part.0", "web.part.1", "web.manifest.xml"} {
			if _, err := os.Stat(filepath.Join(out, f)); err != nil {
				t.Errorf("missing %s: %v", f, err)
			}
		}
		data, err := os.ReadFile(manifest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := bundle.ParseManifest(data)
		if err != nil {
			t.Fatalf("our manifest does not parse: %v", err)
		}
		if m.User != "123456789012" || m.KernelID != "aki-12345678" || len(m.ProductCodes) != 2 || m.Size != 48<<20 {
			t.Errorf("manifest fields: %+v", m)
		}
		if got := m.BlockDeviceMappings; len(got) != 3 || got[0].Virtual != "ami" || got[2].Virtual != "root" {
			t.Errorf("mappings not sorted: %v", got)
		}
		// The cn-north-1 certificate has a 2048-bit key, the default one 1024 bits.
		if len(m.EC2EncryptedKey) != 512 {
			t.Errorf("ec2_encrypted_key is %d hex chars, want 512 (2048-bit cn-north-1 key)", len(m.EC2EncryptedKey))
		}
	})

	t.Run("verify", func(t *testing.T) {
		runBin(t, bin, "verify", "-m", manifest, "-c", cert, "-k", key).must(t, 0,
			"ok    signature", "ok    user key", "ok    parts       2 parts", "ok    tar ", "ok    digest", "every check held")
		// Without key material only the parts are checked, and it says so.
		runBin(t, bin, "verify", "--manifest", manifest).must(t, 0, "skip  signature", "skip  content", "ok    parts")
	})

	t.Run("unbundle", func(t *testing.T) {
		r := runBin(t, bin, "unbundle", "-m", manifest, "-k", key, "-d", rest)
		r.must(t, 0, "image      "+filepath.Join(rest, "web"))
		if sha1Of(t, filepath.Join(rest, "web")) != sha1Of(t, img) {
			t.Fatalf("unbundled image differs from the original")
		}
		if a := allocated(t, filepath.Join(rest, "web")); a > 13<<20 {
			t.Errorf("unbundled image allocates %d bytes: holes not restored", a)
		}
		// Parts found in another directory with -s.
		moved := filepath.Join(dir, "moved")
		if err := os.Mkdir(moved, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"web.part.0", "web.part.1"} {
			if err := os.Link(filepath.Join(out, f), filepath.Join(moved, f)); err != nil {
				t.Fatal(err)
			}
		}
		alone := filepath.Join(dir, "alone.manifest.xml")
		data, _ := os.ReadFile(manifest)
		writeFile(t, alone, data)
		runBin(t, bin, "verify", "-m", alone, "-s", moved, "-k", key).must(t, 0, "every check held")
		runBin(t, bin, "verify", "-m", alone, "-k", key).must(t, 1, "FAIL", "web.part.0")
	})

	t.Run("tampering", func(t *testing.T) {
		bad := filepath.Join(dir, "bad")
		if err := os.Mkdir(bad, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"web.part.0", "web.part.1", "web.manifest.xml"} {
			data, _ := os.ReadFile(filepath.Join(out, f))
			if f == "web.part.1" {
				data[100] ^= 0x01
			}
			writeFile(t, filepath.Join(bad, f), data)
		}
		badManifest := filepath.Join(bad, "web.manifest.xml")
		runBin(t, bin, "verify", "-m", badManifest, "-c", cert, "-k", key).must(t, 1, "ok    signature", "FAIL", "part web.part.1 (index 1): SHA-1")
		runBin(t, bin, "verify", "-m", badManifest).must(t, 1, "part web.part.1 (index 1): SHA-1")
		restBad := filepath.Join(dir, "rest-bad")
		os.Mkdir(restBad, 0o755)
		runBin(t, bin, "unbundle", "-m", badManifest, "-k", key, "-d", restBad).must(t, 1, "part web.part.1 (index 1): SHA-1")
		if ents, _ := os.ReadDir(restBad); len(ents) != 0 {
			t.Errorf("failed unbundle left %d files behind", len(ents))
		}

		// A changed manifest field: the signature no longer matches.
		data, _ := os.ReadFile(manifest)
		changed := bytes.Replace(data, []byte("<architecture>x86_64<"), []byte("<architecture>i386<"), 1)
		writeFile(t, badManifest, changed)
		writeFile(t, filepath.Join(bad, "web.part.1"), mustValue(os.ReadFile(filepath.Join(out, "web.part.1"))))
		runBin(t, bin, "verify", "-m", badManifest, "-c", cert).must(t, 1, "FAIL  signature", "signature does not match")
		runBin(t, bin, "unbundle", "-m", badManifest, "-k", key, "-d", restBad).must(t, 1, "signature does not match")

		// A part name with a path is refused before anything is opened.
		escaped := bytes.Replace(data, []byte("<filename>web.part.0<"), []byte("<filename>../web.part.0<"), 1)
		writeFile(t, badManifest, escaped)
		runBin(t, bin, "verify", "-m", badManifest).must(t, 1, "FAIL  manifest", `"../web.part.0" is not a plain file name`)
		runBin(t, bin, "unbundle", "-m", badManifest, "-k", key, "-d", restBad).must(t, 1, `"../web.part.0" is not a plain file name`)
	})

	t.Run("throw-away key", func(t *testing.T) {
		tdir := filepath.Join(dir, "throwaway")
		os.Mkdir(tdir, 0o755)
		small := filepath.Join(dir, "small.img")
		writeFile(t, small, bytes.Repeat([]byte("x"), 100000))
		r := runBin(t, bin, "bundle-image", "--image", small, "--user", "123456789012", "--destination", tdir, "--arch", "i386")
		r.must(t, 0, "throw-away", "user key   throw-away", "bundle     small.img")
		if !strings.Contains(r.stderr, "nobody (you included) can unbundle it later") {
			t.Errorf("stderr does not explain the throw-away key: %s", r.stderr)
		}
		runBin(t, bin, "verify", "-m", filepath.Join(tdir, "small.img.manifest.xml")).must(t, 0, "ok    parts       1 part,")
		// Our key is not the one the bundle was made for.
		runBin(t, bin, "unbundle", "-m", filepath.Join(tdir, "small.img.manifest.xml"), "-k", key, "-d", tdir).must(t, 1, "signature does not match")
	})

	t.Run("image too large", func(t *testing.T) {
		huge := filepath.Join(dir, "huge.img")
		f, err := os.Create(huge)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(bundle.MaxImageSize + 1)
		f.Close()
		runBin(t, bin, "bundle-image", "-i", huge, "-u", "123456789012", "-d", out).must(t, 1, "-i, --image", "at most 10 GiB")
	})

	t.Run("bad flags", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.pem")
		for _, c := range []struct {
			name string
			args []string
			code int
			want string
		}{
			{"no image", []string{"bundle-image", "-u", "123456789012"}, 2, "-i, --image is required"},
			{"no user", []string{"bundle-image", "-i", img}, 2, "-u, --user is required"},
			{"short user", []string{"bundle-image", "-i", img, "-u", "12345"}, 2, `-u, --user "12345" is not an AWS account id`},
			{"letters in user", []string{"bundle-image", "-i", img, "-u", "1234-5678-901x"}, 2, "-u, --user"},
			{"bad arch", []string{"bundle-image", "-i", img, "-u", "123456789012", "-r", "arm64"}, 2, "-r, --arch \"arm64\": want i386 or x86_64"},
			{"cert without key", []string{"bundle-image", "-i", img, "-u", "123456789012", "-c", cert}, 2, "-c, --cert given without -k"},
			{"key without cert", []string{"bundle-image", "-i", img, "-u", "123456789012", "-k", key}, 2, "-k, --privatekey given without -c"},
			{"ec2cert and region", []string{"bundle-image", "-i", img, "-u", "123456789012", "--ec2cert", cert, "--region", "us-east-1"}, 2, "--ec2cert and --region"},
			{"bad region", []string{"bundle-image", "-i", img, "-u", "123456789012", "--region", "mars"}, 2, `--region "mars" is not an AWS region`},
			{"bad mapping", []string{"bundle-image", "-i", img, "-u", "123456789012", "-B", "root"}, 2, `-B, --block-device-mapping: "root" is not virtual=device`},
			{"bad virtual", []string{"bundle-image", "-i", img, "-u", "123456789012", "-B", "xvda=sda1"}, 2, `-B, --block-device-mapping: virtual name "xvda"`},
			{"bad kernel", []string{"bundle-image", "-i", img, "-u", "123456789012", "--kernel", "vmlinuz"}, 2, "--kernel: \"vmlinuz\" is not an id"},
			{"unknown flag", []string{"bundle-image", "--bogus"}, 2, "flag provided but not defined: -bogus"},
			{"missing value", []string{"bundle-image", "-i"}, 2, "flag needs an argument: -i"},
			{"stray argument", []string{"bundle-image", "-i", img, "extra"}, 2, `unexpected argument "extra"`},
			{"prefix with path", []string{"bundle-image", "-i", img, "-u", "123456789012", "-p", "../x"}, 2, "-p, --prefix"},
			{"no destination", []string{"bundle-image", "-i", img, "-u", "123456789012", "-d", filepath.Join(dir, "nope")}, 2, "-d, --destination"},
			{"empty image", []string{"bundle-image", "-i", os.DevNull, "-u", "123456789012"}, 1, "-i, --image"},
			{"missing image", []string{"bundle-image", "-i", filepath.Join(dir, "nope.img"), "-u", "123456789012"}, 1, "-i, --image: opening image"},
			{"missing cert", []string{"bundle-image", "-i", img, "-u", "123456789012", "-c", missing, "-k", key}, 1, "-c, --cert: reading certificate: open " + missing},
			{"key of another cert", []string{"bundle-image", "-i", img, "-u", "123456789012", "-c", filepath.Join(sampleCert()), "-k", key}, 1, "does not belong to the certificate"},
			{"missing ec2cert", []string{"bundle-image", "-i", img, "-u", "123456789012", "--ec2cert", missing}, 1, "--ec2cert: reading certificate"},
			{"unbundle without key", []string{"unbundle", "-m", manifest}, 2, "-k, --privatekey is required"},
			{"unbundle without manifest", []string{"unbundle", "-k", key}, 2, "-m, --manifest is required"},
			{"unbundle missing manifest", []string{"unbundle", "-m", filepath.Join(dir, "nope.xml"), "-k", key}, 1, "-m, --manifest: open"},
			{"unbundle key is a cert", []string{"unbundle", "-m", manifest, "-k", cert}, 1, "-k, --privatekey: private key " + cert},
			{"verify without manifest", []string{"verify"}, 2, "-m, --manifest is required"},
			{"verify bad source", []string{"verify", "-m", manifest, "-s", filepath.Join(dir, "nope")}, 2, "-s, --source"},
			{"verify manifest is not xml", []string{"verify", "-m", img}, 1, "FAIL  manifest"},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := runBin(t, bin, c.args...)
				r.must(t, c.code, c.want)
				if !strings.HasPrefix(r.stderr, "instancestore-bundler "+c.args[0]+": ") && !strings.Contains(r.stderr, "\ninstancestore-bundler "+c.args[0]+": ") {
					t.Errorf("stderr does not start with the command name: %q", r.stderr)
				}
			})
		}
	})

	t.Run("help", func(t *testing.T) {
		runBin(t, bin, "bundle-image", "-h").must(t, 0, "-i, --image IMAGE", "-B, --block-device-mapping", "--ec2cert PEM")
		runBin(t, bin, "unbundle", "--help").must(t, 0, "-s, --source DIR", "-k, --privatekey PEM")
		runBin(t, bin, "verify", "-h").must(t, 0, "-c, --cert PEM")
	})
}

func sampleCert() string {
	return filepath.Join("..", "..", "bundle", "testdata", "ec2-ami-tools-1.5.3-sample", "TEST-ONLY-user-cert.pem")
}

func mustValue[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
