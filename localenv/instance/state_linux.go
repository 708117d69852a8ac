package instance

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Prefix starts every name this package creates: network namespaces, host-side veth
// links, mount points and state directories.
const Prefix = "isim"

// runIDLen is the length of the per-process run id that follows Prefix in every name.
// Prefix + run id + a base-36 counter must fit a Linux interface name (15 bytes).
const runIDLen = 5

// StateDir holds the run locks, address locks, per-instance runtime directories and
// image mount points. It lives on /run so that a reboot clears it.
var StateDir = "/run/instancestore-isim"

var (
	runOnce sync.Once
	runErr  error
	runID   string
	runLock *os.File // flock held for the life of the process: marks the run alive
	counter atomic.Int64
)

// currentRun returns this process's run id, creating and locking its run file on first
// use and sweeping what crashed runs left behind.
func currentRun() (string, error) {
	runOnce.Do(func() {
		runID, runLock, runErr = newRun()
		if runErr == nil {
			// Leftovers of crashed runs can hold addresses we want; sweep them once.
			if err := Cleanup(Prefix); err != nil {
				runErr = fmt.Errorf("sweeping leftovers of crashed runs: %w", err)
			}
		}
	})
	return runID, runErr
}

// newRun creates runs/<id>.lock already flocked: the file is locked under a temporary
// name and then linked into place, so that no other process ever sees it unlocked and
// mistakes the run for a dead one.
func newRun() (string, *os.File, error) {
	dir := filepath.Join(StateDir, "runs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("creating instance state directory: %w (instances need root)", err)
	}
	for range 100 {
		id := randomHex(runIDLen)
		tmp := filepath.Join(dir, ".tmp-"+randomHex(12))
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
		if err != nil {
			return "", nil, fmt.Errorf("creating run lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			os.Remove(tmp)
			return "", nil, fmt.Errorf("locking run file %s: %w", tmp, err)
		}
		err = os.Link(tmp, filepath.Join(dir, id+".lock"))
		os.Remove(tmp)
		if errors.Is(err, os.ErrExist) {
			f.Close()
			continue
		}
		if err != nil {
			f.Close()
			return "", nil, fmt.Errorf("creating run lock: %w", err)
		}
		fmt.Fprintf(f, "%d\n", os.Getpid())
		return id, f, nil
	}
	return "", nil, errors.New("could not pick a free run id in " + dir)
}

// newName returns a fresh name for an instance or mount of this run.
func newName() (string, error) {
	id, err := currentRun()
	if err != nil {
		return "", err
	}
	return Prefix + id + strconv.FormatInt(counter.Add(1), 36), nil
}

// runAlive reports whether the run that owns name (a name made by newName) is still
// running. Names that do not parse belong to no live run.
func runAlive(name string) bool {
	if len(name) < len(Prefix)+runIDLen || name[:len(Prefix)] != Prefix {
		return false
	}
	id := name[len(Prefix) : len(Prefix)+runIDLen]
	f, err := os.Open(filepath.Join(StateDir, "runs", id+".lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}
