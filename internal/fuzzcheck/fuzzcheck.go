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
// limit bytes plus a slack: a parser must not let a small input claim a large buffer.
// The figure is the heap's cumulative allocation, in which small objects count when
// the runtime hands out a whole span for their size class (up to some hundreds of
// KiB early in a process), hence the slack; the engine's own goroutines allocate a
// few KiB. What this catches is an input that claims megabytes or more.
func Allocs(t testing.TB, limit uint64, f func()) {
	t.Helper()
	// runtime/metrics, unlike ReadMemStats, does not stop the world: cheap enough
	// for every input.
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	f()
	metrics.Read(s)
	if n := s[0].Value.Uint64() - before; n > limit+allocSlack {
		t.Fatalf("one input allocated %d bytes, more than the %d-byte bound", n, limit+allocSlack)
	}
}

const allocSlack = 1 << 20

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
