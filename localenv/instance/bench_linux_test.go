package instance

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkBuildLiteRoot measures BuildLiteRoot from the cached tarball.
func BenchmarkBuildLiteRoot(b *testing.B) {
	ctx := context.Background()
	if _, err := LiteRootTarball(ctx); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	for n := 0; b.Loop(); n++ {
		if err := BuildLiteRoot(ctx, filepath.Join(dir, fmt.Sprint(n))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStartStop measures an instance from Start to SSH banner and back to nothing.
func BenchmarkStartStop(b *testing.B) {
	root := filepath.Join(b.TempDir(), "root")
	ctx := context.Background()
	if err := BuildLiteRoot(ctx, root); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		inst, err := Start(ctx, Config{Root: root})
		if err != nil {
			b.Fatal(err)
		}
		if err := inst.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}
