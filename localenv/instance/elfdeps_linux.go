package instance

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Where the dynamic linker looks, in the root first and then on the host (Debian
// bookworm amd64, the same distribution the .debs come from).
var libDirs = []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/lib"}

// copyHostLibs makes root self-contained: for every dynamically linked ELF file in
// root, each DT_NEEDED library (transitively) and the program interpreter must be
// found in root; those that are not are copied from the host. This is what `ldd` does
// for the reference script, without running the binaries.
func copyHostLibs(root string) error {
	var queue []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			queue = append(queue, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		needed, runpath, interp, err := elfDeps(p)
		if err != nil {
			return fmt.Errorf("reading %s: %w", strings.TrimPrefix(p, root), err)
		}
		if interp != "" {
			dst := filepath.Join(root, interp)
			if !exists(dst) {
				if err := copyHostFile(interp, dst); err != nil {
					return fmt.Errorf("program interpreter of %s: %w", strings.TrimPrefix(p, root), err)
				}
			}
			queue = append(queue, dst)
		}
		for _, lib := range needed {
			found, err := findLib(root, p, lib, runpath)
			if err != nil {
				return err
			}
			queue = append(queue, found)
		}
	}
	return nil
}

// findLib returns lib's path inside root, copying it from the host when root lacks it.
func findLib(root, from, lib string, runpath []string) (string, error) {
	var dirs []string
	for _, rp := range runpath {
		rp = strings.ReplaceAll(rp, "$ORIGIN", strings.TrimPrefix(filepath.Dir(from), root))
		dirs = append(dirs, rp)
	}
	dirs = append(dirs, libDirs...)
	for _, d := range dirs {
		if p := filepath.Join(root, d, lib); exists(p) {
			return p, nil
		}
	}
	for _, d := range libDirs {
		host := filepath.Join(d, lib)
		if !exists(host) {
			continue
		}
		dst := filepath.Join(root, "usr/lib/x86_64-linux-gnu", lib)
		if err := copyHostFile(host, dst); err != nil {
			return "", err
		}
		return dst, nil
	}
	return "", fmt.Errorf("library %s needed by %s is neither in the .debs nor on the host: install the Debian package that provides it (apt-file search %s)", lib, strings.TrimPrefix(from, root), lib)
}

// elfDeps returns an ELF file's DT_NEEDED entries, its DT_RUNPATH/DT_RPATH directories
// and its program interpreter. Files that are not ELF, or are static, have none.
func elfDeps(p string) (needed, runpath []string, interp string, err error) {
	f, err := elf.Open(p)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, "", nil
		}
		return nil, nil, "", err
	}
	defer f.Close()
	if f.Section(".dynamic") == nil {
		return nil, nil, "", nil
	}
	if needed, err = f.ImportedLibraries(); err != nil {
		return nil, nil, "", err
	}
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			runpath = append(runpath, filepath.SplitList(v)...)
		}
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return nil, nil, "", err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	return needed, runpath, interp, nil
}

// copyHostFile copies the file src points to (following symlinks) to dst.
func copyHostFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
