package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLevelFlag: --level reaches the writer (level 1 makes a larger bundle than 9 of
// the same image) and bad values are refused naming the flag, by bundle-image and
// bundle-vol alike.
func TestLevelFlag(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "text.img")
	var b strings.Builder
	for i := 0; b.Len() < 4<<20; i++ {
		fmt.Fprintf(&b, "line %d: the quick brown fox %x jumps over the lazy dog %d\n", i, i*7919, i%97)
	}
	volMust(t, os.WriteFile(img, []byte(b.String()), 0o644))
	sizes := map[string]int64{}
	for _, level := range []string{"1", "9"} {
		dest := filepath.Join(dir, "l"+level)
		volMust(t, os.Mkdir(dest, 0o755))
		code, stdout, stderr := runCLI("bundle-image", "-i", img, "-u", "111122223333", "-d", dest, "--level", level)
		if code != 0 {
			t.Fatalf("--level %s: exit %d\n%s\n%s", level, code, stdout, stderr)
		}
		parts, _ := filepath.Glob(filepath.Join(dest, "text.img.part.*"))
		for _, p := range parts {
			st, err := os.Stat(p)
			volMust(t, err)
			sizes[level] += st.Size()
		}
	}
	if sizes["1"] <= sizes["9"] {
		t.Errorf("bundled bytes at level 1 (%d) not above level 9 (%d): --level not applied", sizes["1"], sizes["9"])
	}
	for _, cmd := range []string{"bundle-image", "bundle-vol"} {
		for _, bad := range []string{"0", "10", "fast", "-1"} {
			args := []string{cmd, "-u", "111122223333", "--level", bad}
			if cmd == "bundle-image" {
				args = append(args, "-i", img)
			}
			code, _, stderr := runCLI(args...)
			if code != 2 || !strings.Contains(stderr, "--level") || !strings.Contains(stderr, "1 (fastest) to 9") {
				t.Errorf("%s --level %s: exit %d, stderr %q; want 2 and the range", cmd, bad, code, stderr)
			}
		}
	}
}
