package driver

import (
	"bytes"
	"debug/elf"
	"fmt"
)

// checkStatic refuses an agent binary the instance may not be able to run: not a
// Linux ELF executable for goarch, or dynamically linked (an interpreter or needed
// shared libraries: the source AMI's libc is unknown, and the agent must not depend on
// it).
func checkStatic(b []byte, goarch, source string) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s is not a Linux (ELF) executable: %w", source, err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "386": elf.EM_386}[goarch]
	if f.Machine != want {
		return fmt.Errorf("%s is built for %s, the instance needs linux/%s: build it with CGO_ENABLED=0 GOOS=linux GOARCH=%s go build ./cmd/instancestore-bundler", source, f.Machine, goarch, goarch)
	}
	var interp bool
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp = true
		}
	}
	libs, _ := f.ImportedLibraries() // no dynamic section: none
	if interp || len(libs) > 0 {
		return fmt.Errorf("%s is dynamically linked (interpreter: %v, libraries: %v) and may not run on the instance: build it statically with CGO_ENABLED=0 GOOS=linux GOARCH=%s go build ./cmd/instancestore-bundler", source, interp, libs, goarch)
	}
	return nil
}
