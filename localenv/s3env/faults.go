package s3env

import (
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// FaultKind is one way the Front fails a request.
type FaultKind string

const (
	// FaultInternalError answers 500 InternalError.
	FaultInternalError FaultKind = "InternalError"
	// FaultServiceUnavailable answers 503 ServiceUnavailable.
	FaultServiceUnavailable FaultKind = "ServiceUnavailable"
	// FaultSlowDown answers 503 SlowDown, S3's throttling error.
	FaultSlowDown FaultKind = "SlowDown"
	// FaultReset resets the connection (TCP RST) without answering.
	FaultReset FaultKind = "Reset"
	// FaultStall holds the request without answering for Faults.Stall, then closes
	// the connection.
	FaultStall FaultKind = "Stall"
	// FaultAccessDenied answers 403 AccessDenied, as a bucket policy that denies the
	// request does: not a transient fault, so no client retries it. Not in AllFaults.
	FaultAccessDenied FaultKind = "AccessDenied"
)

// AllFaults are the transient kinds a Faults with no Kinds picks from.
var AllFaults = []FaultKind{FaultInternalError, FaultServiceUnavailable, FaultSlowDown, FaultReset, FaultStall}

// Faults makes a Front fail a fraction of requests before they reach the backend.
type Faults struct {
	// Rate is the fraction of (matching) requests that fail, 0 to 1.
	Rate float64
	// Seed makes the sequence of decisions repeatable.
	Seed int64
	// Kinds to pick from, uniformly; nil means AllFaults.
	Kinds []FaultKind
	// Stall is how long a stalled request is held; make it longer than the client's
	// timeout. Zero means 30s. Closing the Front ends stalls early.
	Stall time.Duration
	// Match selects the requests that may fail (e.g. only part PUTs); nil means all.
	Match func(*http.Request) bool
}

type faulter struct {
	mu  sync.Mutex
	cfg Faults
	rng *rand.Rand
}

func newFaulter(cfg Faults) *faulter {
	ft := &faulter{}
	ft.set(cfg)
	return ft
}

func (ft *faulter) set(cfg Faults) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = AllFaults
	}
	if cfg.Stall <= 0 {
		cfg.Stall = 30 * time.Second
	}
	ft.cfg = cfg
	ft.rng = rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(cfg.Seed)^0x5bd1e995))
}

// pick decides whether r fails, and how.
func (ft *faulter) pick(r *http.Request) (FaultKind, bool) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.cfg.Rate <= 0 || ft.cfg.Match != nil && !ft.cfg.Match(r) {
		return "", false
	}
	if ft.rng.Float64() >= ft.cfg.Rate {
		return "", false
	}
	return ft.cfg.Kinds[ft.rng.IntN(len(ft.cfg.Kinds))], true
}

func (ft *faulter) stall() time.Duration {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.cfg.Stall
}

// SetFaults replaces the Front's fault configuration (and restarts its random
// sequence from the new seed).
func (f *Front) SetFaults(cfg Faults) { f.faults.set(cfg) }

// FaultCounts returns how many requests failed with each kind so far.
func (f *Front) FaultCounts() map[FaultKind]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := map[FaultKind]int{}
	for _, r := range f.requests {
		if r.Fault != "" {
			n[r.Fault]++
		}
	}
	return n
}

// inject fails r and returns the status answered (0 when there was no answer).
func (f *Front) inject(w http.ResponseWriter, r *http.Request, kind FaultKind) int {
	switch kind {
	case FaultInternalError, FaultServiceUnavailable, FaultSlowDown, FaultAccessDenied:
		// Read the body first so that the client sees the answer, not a broken pipe.
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<30))
		switch kind {
		case FaultAccessDenied:
			writeS3Error(w, http.StatusForbidden, "AccessDenied", "Access Denied", nil)
			return http.StatusForbidden
		case FaultInternalError:
			writeS3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.", nil)
			return http.StatusInternalServerError
		case FaultServiceUnavailable:
			writeS3Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", "Service is unable to handle request.", nil)
		default:
			writeS3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.", nil)
		}
		return http.StatusServiceUnavailable
	case FaultReset:
		hijackClose(w, true)
	case FaultStall:
		t := time.NewTimer(f.faults.stall())
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		case <-f.closing:
		}
		hijackClose(w, false)
	}
	return 0
}

// hijackClose closes the client connection without an answer; with reset, by a TCP
// RST rather than a FIN.
func hijackClose(w http.ResponseWriter, reset bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		tc.SetLinger(0)
	}
	conn.Close()
}
