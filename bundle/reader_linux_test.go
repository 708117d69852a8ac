package bundle

import (
	"os"
	"syscall"
	"testing"
)

// checkSparse fails when got takes much more disk space than want: holes must come
// back as holes.
func checkSparse(t testing.TB, got, want string) {
	t.Helper()
	g, w := allocatedBytes(t, got), allocatedBytes(t, want)
	if g > w+64<<10 {
		t.Errorf("restored image uses %d bytes on disk, the original %d: holes were not restored", g, w)
	}
}

// allocatedBytes is the disk space a file takes.
func allocatedBytes(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}
