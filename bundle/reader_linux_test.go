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
	alloc := func(p string) int64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Blocks * 512
	}
	g, w := alloc(got), alloc(want)
	if g > w+64<<10 {
		t.Errorf("restored image uses %d bytes on disk, the original %d: holes were not restored", g, w)
	}
}
