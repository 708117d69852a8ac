package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

// restoreFixture is a multi-part bundle in a directory served over HTTP (with Range
// support, as S3), and the image it holds.
type restoreFixture struct {
	image    []byte
	parts    string
	manifest *bundle.Manifest
	key      bundle.Key
	srv      *httptest.Server
	gets     int
}

const restoreImageSize = 40 << 20

func newRestoreFixture(t testing.TB) *restoreFixture {
	t.Helper()
	dir := t.TempDir()
	img := make([]byte, restoreImageSize)
	rand.Read(img[1<<20 : 13<<20])                    // incompressible: several parts
	rand.Read(img[20<<20 : 33<<20])                   //
	copy(img[39<<20:], bytes.Repeat([]byte{7}, 4096)) // a block near the end
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	bimg, err := bundle.OpenImage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer bimg.Close()
	k, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	parts := filepath.Join(dir, "parts")
	os.Mkdir(parts, 0o755)
	res, err := bundle.Write(context.Background(), bimg, bundle.WriterConfig{Name: "restore", Key: k}, bundle.DirSink(parts))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Parts) < 3 {
		t.Fatalf("fixture has %d parts, want at least 3", len(res.Parts))
	}
	userCert, _, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	ec2, err := bundle.EC2Certificate("")
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: "1234-5678-9012"}, k, ec2, userCert)
	if err != nil {
		t.Fatal(err)
	}
	f := &restoreFixture{image: img, parts: parts, manifest: m, key: k}
	fs := http.FileServer(http.Dir(parts))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.Header.Get("X-Test-Signed") != "yes" {
			http.Error(w, "AccessDenied", http.StatusForbidden)
			return
		}
		f.gets++
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// run plays the host of a restore onto dev: it answers each part event with a GET of
// the fixture's server.
func (f *restoreFixture) run(t testing.TB, dev string) (*ResultEvent, string, error) {
	t.Helper()
	req := Request{Version: ProtocolVersion, Mode: ModeRestore, Name: f.manifest.Name, Key: f.key.KeyHex(), IV: f.key.IVHex(),
		ProgressMillis: 50, Restore: &RestoreRequest{Manifest: string(f.manifest.Marshal()), Device: dev, Attempts: 2}}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(context.Background(), inR, outW)
		outW.Close()
		done <- err
	}()
	b, _ := json.Marshal(req)
	go inW.Write(append(b, '\n'))
	var result *ResultEvent
	var errMsg string
	sc := bufio.NewScanner(outR)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("agent wrote a non-JSON line %q", sc.Text())
		}
		switch e.Type {
		case EventPart:
			if e.Part.SHA1 != f.manifest.Parts[e.Part.Index].Digest {
				t.Errorf("part event %+v does not carry the manifest's SHA-1", e.Part)
			}
			hd := http.Header{}
			hd.Set("X-Test-Signed", "yes")
			r, _ := json.Marshal(Reply{Type: ReplyURL, Name: e.Part.Name, Request: &presigned.Request{URL: f.srv.URL + "/" + e.Part.Name, Header: hd, Expires: time.Now().Add(time.Minute)}})
			go inW.Write(append(r, '\n'))
		case EventResult:
			result = e.Result
		case EventError:
			errMsg = e.Message
		}
	}
	inW.Close()
	return result, errMsg, <-done
}

// loopDevice attaches a loop device to a new sparse file of size bytes.
func loopDevice(t testing.TB, size int64) (dev, file string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "volume")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev, file
}

// TestRestoreOntoLoopDevice writes a three-part bundle onto a loop device: the device
// then holds the image, blocks of zeros in the image were not written, and every part
// was fetched once.
func TestRestoreOntoLoopDevice(t *testing.T) {
	testroot.Require(t)
	f := newRestoreFixture(t)
	dev, file := loopDevice(t, restoreImageSize+8<<20)
	// A marker where the image has zeros: a fresh EBS volume reads zeros, so the
	// restore must leave such blocks alone (it would be a full write otherwise).
	marker := bytes.Repeat([]byte{0xAA}, 4096)
	fd, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fd.WriteAt(marker, 16<<20); err != nil {
		t.Fatal(err)
	}
	fd.Close()

	res, msg, err := f.run(t, dev)
	if err != nil {
		t.Fatalf("restore: %v (%s)", err, msg)
	}
	if res == nil || res.Restore == nil {
		t.Fatal("no restore result")
	}
	r := res.Restore
	if r.Written != 25<<20+4096 {
		t.Errorf("wrote %d bytes, want only the image's %d bytes of data", r.Written, 25<<20+4096)
	}
	if r.ImageSize != restoreImageSize || r.DeviceSize != restoreImageSize+8<<20 || r.Digest != f.manifest.Digest {
		t.Errorf("result %+v", r)
	}
	if f.gets != len(f.manifest.Parts) {
		t.Errorf("%d GETs for %d parts", f.gets, len(f.manifest.Parts))
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(f.image)
	copy(want[16<<20:], marker)
	if !bytes.Equal(got[:restoreImageSize], want) {
		t.Fatal("the device does not hold the image (with the marker in a zero block)")
	}
}

// TestRestoreFlippedBit: one flipped bit in one part fails the restore, naming the
// part, and no result is sent.
func TestRestoreFlippedBit(t *testing.T) {
	testroot.Require(t)
	f := newRestoreFixture(t)
	name := f.manifest.Parts[1].Filename
	p := filepath.Join(f.parts, name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dev, _ := loopDevice(t, restoreImageSize)
	res, msg, err := f.run(t, dev)
	if err == nil || res != nil {
		t.Fatalf("restore of a corrupt bundle succeeded: %+v", res)
	}
	if !strings.Contains(msg, name) || !strings.Contains(msg, "SHA-1") {
		t.Errorf("error %q does not name the part %s and its SHA-1", msg, name)
	}
}

// TestRestoreRefusesTargets: a file, a device smaller than the image, and a device
// with a mounted file system are refused before any part is fetched.
func TestRestoreRefusesTargets(t *testing.T) {
	testroot.Require(t)
	f := newRestoreFixture(t)

	small, _ := loopDevice(t, restoreImageSize-1<<20)
	mounted, _ := loopDevice(t, restoreImageSize)
	if out, err := exec.Command("mkfs.ext4", "-q", mounted).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", mounted, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	for _, c := range []struct{ name, dev, want string }{
		{"not a device", "/dev/null", "not a block device"},
		{"smaller", small, "smaller than the 41943040-byte image: the volume must be at least 1 GiB"},
		{"mounted", mounted, "is in use (" + mounted + " mounted on " + mnt + ")"},
		{"not under /dev", "/tmp/x", "want a block device path under /dev/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.gets = 0
			_, msg, err := f.run(t, c.dev)
			if err == nil || !strings.Contains(msg, c.want) {
				t.Fatalf("got %q (%v), want it to say %q", msg, err, c.want)
			}
			if f.gets != 0 {
				t.Errorf("%d parts fetched before the refusal", f.gets)
			}
		})
	}
}
