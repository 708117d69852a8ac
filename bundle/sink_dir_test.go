package bundle

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDirSink(t *testing.T) {
	dir := t.TempDir()
	s := DirSink(dir)
	if err := s.PutPart(&Part{Name: "img.part.00", Data: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if err := s.(PartRenamer).RenamePart("img.part.00", "img.part.0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "img.part.0" {
		t.Fatalf("directory holds %v, want only img.part.0 (no temporary files)", entries)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "img.part.0")); string(b) != "hello" {
		t.Errorf("part holds %q", b)
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "/etc/passwd"} {
		if err := s.PutPart(&Part{Name: bad, Data: []byte("x")}); err == nil {
			t.Errorf("PutPart accepted the name %q", bad)
		}
		if err := s.(PartRenamer).RenamePart("img.part.0", bad); err == nil {
			t.Errorf("RenamePart accepted the name %q", bad)
		}
	}
	if err := DirSink(filepath.Join(dir, "missing")).PutPart(&Part{Name: "p", Data: nil}); err == nil {
		t.Error("PutPart into a missing directory succeeded")
	}
}
