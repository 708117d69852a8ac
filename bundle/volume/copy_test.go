package volume

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// newTestCopier copies src into dst with a plan that takes everything.
func newTestCopier(t *testing.T, src, dst string, warnings *[]string) *Copier {
	p := &Plan{Volume: src, exclude: map[string]string{}, emptied: map[string]string{}, pseudo: map[string]bool{},
		skipped: map[string][]string{}, nskipped: map[string]int{}}
	c := &Copier{Plan: p, Dst: dst, Warn: func(m string) { *warnings = append(*warnings, m) }}
	c.links = map[inodeKey]string{}
	c.buf = make([]byte, 1<<20)
	return c
}

// TestCopyVanishedAndChanged: a file that disappears between listing and copying, and
// one that changes while copied, are warnings and do not stop the copy.
func TestCopyVanishedAndChanged(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	var warnings []string
	c := newTestCopier(t, src, dst, &warnings)

	if err := c.copyEntry(context.Background(), "/gone", Decision{Action: Copy}); err != nil {
		t.Fatalf("vanished file: %v", err)
	}
	// "changed": the stat taken before the copy no longer matches the file.
	writeFile(t, filepath.Join(src, "log"), []byte("first line\n"), 0o644)
	var before unix.Stat_t
	must(t, unix.Lstat(filepath.Join(src, "log"), &before))
	f, err := os.OpenFile(filepath.Join(src, "log"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	f.WriteString("second line\n")
	f.Close()
	ok, err := c.copyFile("/log", filepath.Join(src, "log"), filepath.Join(dst, "log"), &before)
	if err != nil || !ok {
		t.Fatalf("changed file: ok=%v err=%v", ok, err)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], "vanished") || !strings.Contains(warnings[1], "changed while it was copied") {
		t.Errorf("warnings %q, want one vanished and one changed", warnings)
	}
	if c.Stats().Warnings != 2 {
		t.Errorf("Stats().Warnings = %d", c.Stats().Warnings)
	}
}

// TestCopyExtentsKeepsHoles copies a file with holes at the start, middle and end.
func TestCopyExtentsKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src, err := os.Create(filepath.Join(dir, "src"))
	must(t, err)
	defer src.Close()
	data := []byte(strings.Repeat("data", 2048)) // 8 KiB
	src.WriteAt(data, 1<<20)
	src.WriteAt(data, 3<<20)
	must(t, src.Truncate(5<<20))
	dst, err := os.Create(filepath.Join(dir, "dst"))
	must(t, err)
	defer dst.Close()
	n, short, err := copyExtents(dst, src, 5<<20, make([]byte, 64<<10))
	if err != nil || short {
		t.Fatalf("copyExtents: %v short=%v", err, short)
	}
	if n > 64<<10 {
		t.Errorf("read %d bytes: holes were read", n)
	}
	if got, want := dataExtents(t, dst.Name(), 5<<20), dataExtents(t, src.Name(), 5<<20); got != want {
		t.Errorf("extents %s, want %s", got, want)
	}
	a, _ := os.ReadFile(src.Name())
	b, _ := os.ReadFile(dst.Name())
	if string(a) != string(b) {
		t.Error("content differs")
	}
}
