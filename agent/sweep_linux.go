package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
)

// StateDir is where every imaging run leaves its marker: <pid>.json (what the run is
// and where its scratch is) and <pid>.lock, flocked for the run's whole life. The
// kernel drops the lock when the process dies however it dies (SIGKILL included), so
// a marker whose lock can be taken belongs to a dead run.
const StateDir = "/run/instancestore-bundler"

// runMarker is the content of a run's marker file.
type runMarker struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Dir     string    `json:"dir"` // the run's scratch directory: everything it made is under it
}

// liveRun is the marker of the running agent; release removes it at the end.
type liveRun struct {
	dir  string
	lock *os.File
	base string
}

// startRun sweeps what dead runs left, then marks this run: a new scratch directory
// under scratch, its marker and the held lock. Swept runs are reported to logf.
func startRun(stateDir, scratch string, logf func(string, ...any)) (*liveRun, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the agent state directory: %w", err)
	}
	for _, msg := range Sweep(stateDir) {
		logf("%s", msg)
	}
	dir, err := os.MkdirTemp(scratch, "instancestore-run-")
	if err != nil {
		return nil, fmt.Errorf("scratch directory %s: %w", scratch, err)
	}
	base := filepath.Join(stateDir, fmt.Sprint(os.Getpid()))
	lock, err := os.OpenFile(base+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("locking the run marker %s.lock: %w", base, err)
	}
	b, _ := json.Marshal(runMarker{PID: os.Getpid(), Started: time.Now().UTC(), Dir: dir})
	if err := os.WriteFile(base+".json", b, 0o600); err != nil {
		lock.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("writing the run marker: %w", err)
	}
	return &liveRun{dir: dir, lock: lock, base: base}, nil
}

// release removes the run's scratch directory and marker (imaging has undone its
// mounts and loops by then), then drops the lock.
func (r *liveRun) release() error {
	err := os.RemoveAll(r.dir)
	os.Remove(r.base + ".json")
	os.Remove(r.base + ".lock")
	r.lock.Close()
	return err
}

// Sweep finds the markers in stateDir whose run is dead and removes what the run
// left: mounts under its scratch directory (deepest first), loop devices backed by
// files in it, the directory and the marker. It returns one message per run swept
// or per thing it could not remove. Live runs are left alone.
func Sweep(stateDir string) []string {
	var msgs []string
	locks, _ := filepath.Glob(filepath.Join(stateDir, "*.lock"))
	for _, lp := range locks {
		base := strings.TrimSuffix(lp, ".lock")
		f, err := os.OpenFile(lp, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // held: the run is alive
			continue
		}
		var m runMarker
		b, rerr := os.ReadFile(base + ".json")
		if rerr == nil {
			rerr = json.Unmarshal(b, &m)
		}
		if rerr == nil && m.Dir != "" && strings.Contains(filepath.Base(m.Dir), "instancestore-run-") {
			msgs = append(msgs, sweepDir(m)...)
		}
		os.Remove(base + ".json")
		os.Remove(lp)
		f.Close()
	}
	return msgs
}

func sweepDir(m runMarker) []string {
	var msgs, done []string
	dir := filepath.Clean(m.Dir)
	under := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	mounts, err := volume.ReadMounts()
	if err != nil {
		return []string{fmt.Sprintf("sweeping the dead run %d: %v", m.PID, err)}
	}
	var points []string
	fromMount := map[string]string{} // loop device -> the mount point it was the source of
	for _, mt := range mounts {
		if under(mt.Point) {
			points = append(points, mt.Point)
			if isLoopNode(mt.Source) {
				fromMount[mt.Source] = mt.Point
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		if err := unix.Unmount(p, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				msgs = append(msgs, fmt.Sprintf("could not unmount %s of the dead run %d: %v", p, m.PID, err))
				continue
			}
		}
		done = append(done, "mount "+p)
	}
	// The run's loop devices: the sources of its mounts, and every device whose
	// backing file is in its directory, by sysfs and, where the instance has no sysfs
	// mounted (containers, namespace instances), by each /dev/loopN node's status.
	// A device is only detached while its backing file is still the run's: an
	// autoclear device is freed by its unmount, and may be someone else's by now.
	cands := map[string]bool{}
	for dev := range fromMount {
		cands[dev] = true
	}
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range backing {
		b, err := os.ReadFile(bf)
		if err == nil && under(strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")) {
			cands["/dev/"+filepath.Base(filepath.Dir(filepath.Dir(bf)))] = true
		}
	}
	nodes, _ := filepath.Glob("/dev/loop[0-9]*")
	for _, n := range nodes {
		if isLoopNode(n) {
			if name, bound := loopBacking(n); bound && loopNameUnder(name, dir) {
				cands[n] = true
			}
		}
	}
	devs := make([]string, 0, len(cands))
	for d := range cands {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	for _, dev := range devs {
		name, bound := loopBacking(dev)
		switch {
		case !bound && fromMount[dev] != "":
			done = append(done, "loop device "+dev+" (released with "+fromMount[dev]+")")
			continue
		case !bound:
			continue // detached meanwhile
		case !loopNameUnder(name, dir) && !sysfsBackingUnder(dev, under):
			continue // reused by someone else after its unmount
		}
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err == nil {
			err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
			f.Close()
		}
		if err != nil && !errors.Is(err, unix.ENXIO) {
			msgs = append(msgs, fmt.Sprintf("could not detach %s of the dead run %d: %v", dev, m.PID, err))
			continue
		}
		done = append(done, "loop device "+dev)
	}
	if err := os.RemoveAll(dir); err != nil {
		msgs = append(msgs, fmt.Sprintf("could not remove %s of the dead run %d: %v", dir, m.PID, err))
	} else {
		done = append(done, "scratch "+dir)
	}
	what := "nothing was left"
	if len(done) > 0 {
		what = "removed " + strings.Join(done, ", ")
	}
	return append([]string{fmt.Sprintf("swept what a dead agent run left (pid %d, started %s): %s", m.PID, m.Started.Format(time.RFC3339), what)}, msgs...)
}

// isLoopNode reports whether p names a loop device node, /dev/loopN.
func isLoopNode(p string) bool {
	n, ok := strings.CutPrefix(p, "/dev/loop")
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// loopBacking returns the backing file name a loop device reports (LOOP_GET_STATUS64:
// the name given when it was set up, cut to 63 bytes) and whether it is bound.
func loopBacking(dev string) (string, bool) {
	f, err := os.Open(dev)
	if err != nil {
		return "", false
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return "", false // ENXIO: free
	}
	name := info.File_name[:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name), true
}

// loopNameUnder reports whether a loop device's (possibly cut) backing name is a file
// in dir: the name must hold all of dir and the slash after it.
func loopNameUnder(name, dir string) bool {
	return strings.HasPrefix(name, dir+"/")
}

// sysfsBackingUnder reports whether sysfs shows dev's backing file in the directory.
func sysfsBackingUnder(dev string, under func(string) bool) bool {
	b, err := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/backing_file")
	return err == nil && under(strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"))
}

// markRun runs startRun for a volume request and returns the request with the run's
// scratch directory, and the func that releases the run.
func markRun(req *Request, logf func(string, ...any)) (*Request, func(), error) {
	v := *req.Volume
	if v.Scratch == "" {
		v.Scratch = volume.DefaultScratch(v.SizeMB << 20)
	}
	run, err := startRun(StateDir, v.Scratch, logf)
	if err != nil {
		return nil, nil, err
	}
	v.Scratch = run.dir
	// Not in the image when it is on the volume (the work directory under it is
	// left out by imaging itself).
	vol := v.Volume
	if vol == "" {
		vol = "/"
	}
	if rel, err := filepath.Rel(vol, run.dir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		v.Excludes = append(append([]string(nil), v.Excludes...), run.dir)
	}
	r := *req
	r.Volume = &v
	return &r, func() {
		if err := run.release(); err != nil {
			logf("warning: removing the scratch directory: %v", err)
		}
	}, nil
}
