package ec2sim

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// FaultKind is an error the simulator answers instead of running a call.
type FaultKind string

const (
	// FaultRequestLimitExceeded is EC2's throttling answer: HTTP 503,
	// RequestLimitExceeded (the SDKs treat it as a throttle error and retry it).
	FaultRequestLimitExceeded FaultKind = "RequestLimitExceeded"
	// FaultUnavailable is HTTP 503 Unavailable: the server is overloaded.
	FaultUnavailable FaultKind = "Unavailable"
)

// AllFaults are the kinds a Faults with no Kinds picks from.
var AllFaults = []FaultKind{FaultRequestLimitExceeded, FaultUnavailable}

// FaultsEnv is the environment variable New reads when Config.Faults is unset, e.g.
// "rate=0.2,seed=7,kinds=RequestLimitExceeded+Unavailable,RunInstances=0.5":
// rate for every action, and a rate per action by its name.
const FaultsEnv = "INSTANCESTORE_EC2_FAULTS"

// Faults makes the simulator fail a share of EC2 calls (not STS) before they run, as
// a throttled or overloaded EC2 does. The failed call changes nothing.
type Faults struct {
	// Rate is the share of calls that fail, 0 to 1.
	Rate float64
	// Actions overrides Rate for the actions it names (e.g. "TerminateInstances": 1).
	Actions map[string]float64
	// Kinds to pick from, uniformly; nil means AllFaults.
	Kinds []FaultKind
	// Seed makes the sequence of decisions repeatable.
	Seed int64
}

func (f Faults) active() bool { return f.Rate > 0 || len(f.Actions) > 0 }

// ParseFaults reads the FaultsEnv syntax.
func ParseFaults(s string) (Faults, error) {
	var f Faults
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Faults{}, fmt.Errorf("%s: %q is not key=value", FaultsEnv, kv)
		}
		switch k {
		case "seed":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Faults{}, fmt.Errorf("%s: seed %q is not an integer", FaultsEnv, v)
			}
			f.Seed = n
		case "kinds":
			for _, kind := range strings.Split(v, "+") {
				switch FaultKind(kind) {
				case FaultRequestLimitExceeded, FaultUnavailable:
					f.Kinds = append(f.Kinds, FaultKind(kind))
				default:
					return Faults{}, fmt.Errorf("%s: kind %q is not RequestLimitExceeded or Unavailable", FaultsEnv, kind)
				}
			}
		default:
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r < 0 || r > 1 {
				return Faults{}, fmt.Errorf("%s: %s=%q: a rate is a number from 0 to 1", FaultsEnv, k, v)
			}
			if k == "rate" {
				f.Rate = r
			} else {
				if _, known := ec2Actions[k]; !known {
					return Faults{}, fmt.Errorf("%s: %q is not an EC2 action the simulator serves (nor rate, seed or kinds)", FaultsEnv, k)
				}
				if f.Actions == nil {
					f.Actions = map[string]float64{}
				}
				f.Actions[k] = r
			}
		}
	}
	return f, nil
}

func faultsFromEnv() (Faults, error) {
	s := os.Getenv(FaultsEnv)
	if s == "" {
		return Faults{}, nil
	}
	return ParseFaults(s)
}

type faulter struct {
	mu     sync.Mutex
	cfg    Faults
	rng    *rand.Rand
	counts map[string]int // "Action/Kind" -> injected
}

func (ft *faulter) set(cfg Faults) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = AllFaults
	}
	ft.cfg = cfg
	ft.rng = rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(cfg.Seed)^0x9e3779b97f4a7c15))
}

// pick decides whether a call of action fails, and how.
func (ft *faulter) pick(action string) (*APIError, bool) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.rng == nil {
		return nil, false
	}
	rate, ok := ft.cfg.Actions[action]
	if !ok {
		rate = ft.cfg.Rate
	}
	if rate <= 0 || ft.rng.Float64() >= rate {
		return nil, false
	}
	kind := ft.cfg.Kinds[ft.rng.IntN(len(ft.cfg.Kinds))]
	if ft.counts == nil {
		ft.counts = map[string]int{}
	}
	ft.counts[action+"/"+string(kind)]++
	if kind == FaultUnavailable {
		return apiErr(503, string(kind), "The server is overloaded and can't handle the request."), true
	}
	return apiErr(503, string(kind), "Request limit exceeded."), true
}

// SetFaults replaces the fault configuration (and restarts its random sequence).
func (s *Server) SetFaults(f Faults) { s.faults.set(f) }

// FaultCounts returns how many calls failed, by "Action/Kind".
func (s *Server) FaultCounts() map[string]int {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	out := make(map[string]int, len(s.faults.counts))
	for k, v := range s.faults.counts {
		out[k] = v
	}
	return out
}

// FaultSummary is FaultCounts as one sorted line, for logs.
func (s *Server) FaultSummary() string {
	c := s.FaultCounts()
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, c[k])
	}
	return b.String()
}
