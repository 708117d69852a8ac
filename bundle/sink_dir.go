package bundle

import (
	"fmt"
	"os"
	"path/filepath"
)

// DirSink stores parts as files in dir (which must exist). Each part is written to a
// temporary file and renamed into place, so a part file is either complete or absent.
// It implements PartRenamer.
func DirSink(dir string) Sink { return &dirSink{dir: dir} }

type dirSink struct{ dir string }

func (s *dirSink) PutPart(p *Part) error {
	if err := checkPartName(p.Name); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir, "."+p.Name+".tmp*")
	if err != nil {
		return fmt.Errorf("writing part into %s: %w", s.dir, err)
	}
	tmp := f.Name()
	_, err = f.Write(p.Data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, p.Name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing part %s: %w", filepath.Join(s.dir, p.Name), err)
	}
	return nil
}

func (s *dirSink) RenamePart(from, to string) error {
	for _, n := range []string{from, to} {
		if err := checkPartName(n); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(s.dir, from), filepath.Join(s.dir, to)); err != nil {
		return fmt.Errorf("renaming part: %w", err)
	}
	return nil
}

// Close has nothing to wait for: PutPart writes synchronously.
func (s *dirSink) Close() error { return nil }

// checkPartName refuses names that would leave the directory.
func checkPartName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name || name != filepath.Clean(name) {
		return fmt.Errorf("part name %q is not a plain file name", name)
	}
	return nil
}
