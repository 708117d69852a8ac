package bundle

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const fixtureDir = "testdata/ec2-ami-tools-1.5.3-sample"

// fixtureKey reads the bundle key and IV the fixture's README gives.
func fixtureKey(t *testing.T) Key {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(fixtureDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	find := func(what string) string {
		m := regexp.MustCompile("(?s)RSA-decrypting `" + what + "`[^`]*`([0-9a-f]{32})`").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("%s/README.md does not give the %s", fixtureDir, what)
		}
		return string(m[1])
	}
	k, err := ParseKey(find("user_encrypted_key"), find("user_encrypted_iv"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestTarMatchesGNUTar checks that our tar stream for the fixture's disk.img is
// byte-identical to the one GNU tar 1.34 made inside the ec2-ami-tools bundle.
func TestTarMatchesGNUTar(t *testing.T) {
	k := fixtureKey(t)
	want, err := os.ReadFile(decryptParts(t, filepath.Join(fixtureDir, "bundle"), []PartInfo{{Name: "sample.part.0"}}, k))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha1.Sum(want)); got != "16f07cd2c7b2067a6ed5fa1f51fb0f2c70249448" {
		t.Fatalf("decrypted fixture tar has SHA-1 %s, want the manifest digest", got)
	}

	// disk.img is stored whole in git; GNU tar saw it sparse.
	sparse := filepath.Join(t.TempDir(), "disk.img")
	sparseCopy(t, filepath.Join(fixtureDir, "disk.img"), sparse)
	opened, err := OpenImage(sparse)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	if got, want := opened.Extents(), []Extent{{0, 4096}, {1 << 20, 4096}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("extents of the sparse copy of disk.img = %v, want %v", got, want)
	}
	f, err := os.Open(sparse)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := NewImage(f, opened.Size(), opened.Extents(), time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), 0o644)

	got := tarBytes(t, "sample", img)
	if !bytes.Equal(got, want) {
		t.Fatalf("our tar differs from GNU tar's at byte %d (len %d vs %d)\nours:   %q\nGNU's:  %q",
			firstDiff(got, want), len(got), len(want), window(got, firstDiff(got, want)), window(want, firstDiff(got, want)))
	}

	// The whole pipeline gives the same tar stream and the fixture's digest.
	dir := t.TempDir()
	res, err := Write(context.Background(), img, WriterConfig{Name: "sample", Key: k}, DirSink(dir))
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != "16f07cd2c7b2067a6ed5fa1f51fb0f2c70249448" {
		t.Errorf("Result.Digest = %s, want the fixture manifest's digest", res.Digest)
	}
	again, err := os.ReadFile(decryptParts(t, dir, res.Parts, k))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, want) {
		t.Fatalf("tar stream of our bundle differs from GNU tar's at byte %d", firstDiff(again, want))
	}
}

func tarBytes(t *testing.T, name string, img *Image) []byte {
	t.Helper()
	a, err := newTarArchive(name, img)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.writeTo(context.Background(), &buf, make([]byte, 4096), nil); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != a.size {
		t.Fatalf("tar stream is %d bytes, layout said %d", buf.Len(), a.size)
	}
	return buf.Bytes()
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func window(b []byte, i int) []byte {
	return b[max(0, i-16):min(len(b), i+16)]
}

// TestTarAgainstGNUTar writes sparse files of many shapes, archives each with GNU tar
// -S and with our writer, and wants the same bytes; GNU tar -tvS and Go's archive/tar
// must read ours back.
func TestTarAgainstGNUTar(t *testing.T) {
	needTools(t, "tar")
	const K, M, G = int64(1) << 10, int64(1) << 20, int64(1) << 30
	every := func(n int, step, length int64) []Extent {
		var ext []Extent
		for i := range n {
			ext = append(ext, Extent{int64(i) * step, length})
		}
		return ext
	}
	cases := []struct {
		name    string
		size    int64
		extents []Extent
		member  string      // default "img"
		mode    os.FileMode // default 0640
	}{
		{"tiny, no holes", 1000, []Extent{{0, 1000}}, "", 0},
		{"empty", 0, nil, "", 0},
		{"all hole", M, nil, "", 0},
		{"ends with a hole", M, []Extent{{0, 8 * K}, {64 * K, 8 * K}}, "", 0},
		{"ends with data in a partial block", M + 100, []Extent{{0, 4 * K}, {M - 4*K, 4*K + 100}}, "", 0},
		{"leading hole", 256 * K, []Extent{{128 * K, 128 * K}}, "", 0},
		{"3 regions: map fits the header", M, every(3, 64*K, 4*K), "", 0},
		{"4 regions: one extension block", M, every(4, 64*K, 4*K), "", 0},
		{"24 regions: extension block full", 2 * M, every(24, 64*K, 4*K), "", 0},
		{"25 regions: two extension blocks", 2 * M, every(25, 64*K, 4*K), "", 0},
		{"60 regions", 4 * M, every(60, 64*K, 4*K), "", 0},
		{"9 GiB: base-256 offsets and size", 9 * G, []Extent{{0, 4 * K}, {8*G + 512*M, 4 * K}, {9*G - 4*K, 4 * K}}, "", 0},
		{"99-byte name, setuid and sticky bits", 64 * K, []Extent{{0, 4 * K}}, strings.Repeat("n", 99), 0o755 | os.ModeSetuid | os.ModeSticky},
	}
	mtime := time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			member, mode := cmp.Or(c.member, "img"), cmp.Or(c.mode, 0o640)
			path := filepath.Join(dir, member)
			makeSparse(t, path, c.size, c.extents, true)
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			gnu := filepath.Join(dir, "gnu.tar")
			run(t, nil, "tar", "-c", "-S", "-f", gnu, "--owner=root:0", "--group=root:0", "-C", dir, member)
			want, err := os.ReadFile(gnu)
			if err != nil {
				t.Fatal(err)
			}

			img, err := OpenImage(path)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			got := tarBytes(t, member, img)
			if i := firstDiff(got, want); i != len(got) || len(got) != len(want) {
				t.Fatalf("differs from GNU tar at byte %d (len %d vs %d)\nours: %q\nGNU:  %q", i, len(got), len(want), window(got, i), window(want, i))
			}

			ours := filepath.Join(dir, "ours.tar")
			if err := os.WriteFile(ours, got, 0o644); err != nil {
				t.Fatal(err)
			}
			list := string(run(t, nil, "tar", "-tvS", "-f", ours))
			perms := map[os.FileMode]string{0o640: "-rw-r-----", 0o755 | os.ModeSetuid | os.ModeSticky: "-rwsr-xr-t"}[mode]
			wantList := fmt.Sprintf("%s root/root %d 2024-02-29 12:34 %s", perms, c.size, member)
			if strings.Join(strings.Fields(list), " ") != wantList {
				t.Errorf("tar -tvS lists %q, want %q", list, wantList)
			}
			if c.size <= 64<<20 { // reading 9 GiB of zeros through archive/tar takes half a minute
				checkGoTarReads(t, got, path, c.size)
			}
		})
	}
}

// checkGoTarReads reads the archive with archive/tar and compares the member's
// content with the file at path.
func checkGoTarReads(t *testing.T, archive []byte, path string, size int64) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	h, err := tr.Next()
	if err != nil {
		t.Fatalf("archive/tar: %v", err)
	}
	if h.Size != size || h.Uid != 0 || h.Uname != "root" || h.Gname != "root" {
		t.Errorf("archive/tar header: size %d uid %d %s/%s", h.Size, h.Uid, h.Uname, h.Gname)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n, err := io.ReadFull(tr, a[:min(int64(len(a)), size-off)])
		if err != nil {
			t.Fatalf("archive/tar reading member at %d: %v", off, err)
		}
		if _, err := f.ReadAt(b[:n], off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a[:n], b[:n]) {
			t.Fatalf("archive/tar: member content differs from the image in [%d, %d)", off, off+int64(n))
		}
		off += int64(n)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("archive/tar: want exactly one member, Next = %v", err)
	}
}
