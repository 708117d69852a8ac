// Package cmdlines samples the command lines of every process on the machine, so that
// tests can prove no secret ever reached one. Instances in network namespaces are host
// processes too, so one sampler sees the plugin, Packer, sshd and the agent alike.
package cmdlines

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Sampler collects distinct command lines until Stop.
type Sampler struct {
	quit chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[string]bool
}

// Sample starts reading /proc/*/cmdline every 10 ms; arguments are joined by spaces.
func Sample() *Sampler {
	s := &Sampler{quit: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range paths {
				b, err := os.ReadFile(p)
				if err != nil || len(b) == 0 {
					continue
				}
				s.mu.Lock()
				s.seen[string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))] = true
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// Stop ends sampling and returns every distinct command line seen.
func (s *Sampler) Stop() []string {
	close(s.quit)
	<-s.done
	out := make([]string, 0, len(s.seen))
	for l := range s.seen {
		out = append(out, l)
	}
	return out
}
