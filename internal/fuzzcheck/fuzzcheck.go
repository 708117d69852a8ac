// Package fuzzcheck holds what the fuzz tests of several packages share: a bound on
// what one input may allocate.
package fuzzcheck

import (
	"flag"
	"runtime/metrics"
	"testing"
	"time"
)

// Allocs runs f and fails t when f (and the goroutines it starts) allocated more than
// limit bytes: a parser must not let a small input claim a large buffer. The figure
// is the heap's cumulative allocation (tiny objects are counted when their block
// fills, a few bytes late), so it is exact while nothing else runs; the
// fuzzing engine's own goroutines allocate a few KiB at most, far under any limit.
func Allocs(t testing.TB, limit uint64, f func()) {
	t.Helper()
	// runtime/metrics, unlike ReadMemStats, does not stop the world: cheap enough
	// for every input.
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	f()
	metrics.Read(s)
	if n := s[0].Value.Uint64() - before; n > limit {
		t.Fatalf("one input allocated %d bytes, more than the %d-byte bound", n, limit)
	}
}

// CapMinimize bounds the time Go's fuzzing engine spends minimizing one new input to
// d, unless -fuzzminimizetime was given. While it minimizes, the engine fuzzes
// nothing, and its subset-removal pass is quadratic in the input's length: with the
// default minute, one new input of a few hundred bytes halts a short run outright
// (FuzzUnbundle went from thousands of executions a second to none). Call it before
// f.Fuzz.
func CapMinimize(d time.Duration) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		_ = flag.Set("test.fuzzminimizetime", d.String())
	}
}
