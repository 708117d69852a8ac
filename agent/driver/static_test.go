//go:build linux && amd64

package driver

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestAgentBinaryMustBeStatic: a dynamically linked agent_binary is refused before it
// is uploaded; a static one of the wrong architecture as well; a static one passes.
func TestAgentBinaryMustBeStatic(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	static := filepath.Join(filepath.Dir(file), "..", "..", "bin", "packer-sdc") // a static Go executable
	for _, c := range []struct {
		path, arch, want string
	}{
		{"/bin/ls", "x86_64", "dynamically linked"},
		{static, "i386", "is built for EM_X86_64"},
		{static, "x86_64", ""},
	} {
		if _, err := os.Stat(c.path); err != nil {
			t.Fatalf("test input: %v", err)
		}
		_, err := findAgentBinary(c.arch, c.path)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s (%s): %v", c.path, c.arch, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s (%s): error %v, want one saying %q", c.path, c.arch, err, c.want)
		}
	}
}
