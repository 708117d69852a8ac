package agent

import (
	"bytes"
	"context"
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
	// ScratchDisk is the NVMe instance store disk the run formats and mounts on
	// ScratchMount as its scratch (Dir is under it); both are in the marker before the
	// disk is formatted.
	ScratchDisk  string `json:"scratch_disk,omitempty"`
	ScratchMount string `json:"scratch_mount,omitempty"`
}

// liveRun is the marker of the running agent; release removes it at the end.
type liveRun struct {
	dir  string
	lock *os.File
	base string
	disk *scratchDisk // the NVMe instance store disk mounted for the run, or nil
	logf func(string, ...any)
}

// startRun sweeps what dead runs left, then marks this run: its marker and the held
// lock, the scratch pick chooses (after the sweep, so that a disk a dead run left
// mounted is free again) and a new scratch directory under it. When pick gives an NVMe
// instance store disk, the disk is formatted and mounted beside the marker
// (<pid>.scratch) for the run, and release unmounts it; if that fails, the run's
// scratch is the directory pick gave. Swept runs and the disk are reported to logf.
func startRun(ctx context.Context, stateDir string, pick func() (string, *scratchDisk), logf func(string, ...any)) (_ *liveRun, err error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the agent state directory: %w", err)
	}
	for _, msg := range Sweep(stateDir) {
		logf("%s", msg)
	}
	base := filepath.Join(stateDir, fmt.Sprint(os.Getpid()))
	lock, err := os.OpenFile(base+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, fmt.Errorf("locking the run marker %s.lock: %w", base, err)
	}
	run := &liveRun{lock: lock, base: base, logf: logf}
	defer func() {
		if err != nil {
			if rerr := run.release(); rerr != nil {
				logf("warning: %v", rerr)
			}
		}
	}()
	m := runMarker{PID: os.Getpid(), Started: time.Now().UTC()}
	scratch, disk := pick()
	if disk != nil {
		m.ScratchDisk, m.ScratchMount = disk.Dev, base+".scratch"
		if err := writeMarker(base, m); err != nil {
			return nil, err
		}
		if err := disk.mount(ctx, m.ScratchMount); err != nil {
			logf("warning: %v; the scratch goes to %s", err, scratch)
			m.ScratchDisk, m.ScratchMount = "", ""
		} else {
			run.disk = disk
			scratch = disk.Dir
			logf("scratch: the NVMe instance store disk %s (%d MiB), formatted and mounted on %s for this run", disk.Dev, disk.Size>>20, disk.Dir)
		}
	}
	dir, err := os.MkdirTemp(scratch, "instancestore-run-")
	if err != nil {
		return nil, fmt.Errorf("scratch directory %s: %w", scratch, err)
	}
	run.dir, m.Dir = dir, dir
	if err := writeMarker(base, m); err != nil {
		return nil, err
	}
	return run, nil
}

// writeMarker replaces the run's marker with m (a new file renamed over it, so that a
// sweep never reads half of one).
func writeMarker(base string, m runMarker) error {
	b, _ := json.Marshal(m)
	if err := os.WriteFile(base+".json.new", b, 0o600); err != nil {
		return fmt.Errorf("writing the run marker: %w", err)
	}
	if err := os.Rename(base+".json.new", base+".json"); err != nil {
		return fmt.Errorf("writing the run marker: %w", err)
	}
	return nil
}

// release removes the run's scratch directory (imaging has undone its mounts and loops
// by then), unmounts and wipes the scratch disk it mounted, removes the marker and
// drops the lock. The marker stays while the disk could not be unmounted, for the
// next run's sweep.
func (r *liveRun) release() error {
	var err error
	if r.dir != "" {
		err = os.RemoveAll(r.dir)
	}
	if r.disk != nil {
		dir := r.disk.Dir
		if uerr := r.disk.unmount(); uerr != nil {
			r.lock.Close()
			return errors.Join(err, uerr)
		}
		r.logf("scratch: the NVMe instance store disk %s unmounted from %s and wiped", r.disk.Dev, dir)
		r.disk = nil
	}
	os.Remove(r.base + ".json")
	os.Remove(r.base + ".json.new")
	os.Remove(r.base + ".lock")
	r.lock.Close()
	return err
}

// Sweep finds the markers in stateDir whose run is dead and removes what the run
// left: mounts under its scratch directory (deepest first), loop devices backed by
// files in it, the directory, the NVMe instance store disk it mounted as scratch
// (unmounted and wiped) and the marker. It returns one message per run swept or per
// thing it could not remove. Live runs are left alone.
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
		keep := false
		if rerr == nil && (m.ScratchDisk != "" || m.Dir != "" && strings.Contains(filepath.Base(m.Dir), "instancestore-run-")) {
			var runMsgs []string
			runMsgs, keep = sweepRun(m)
			msgs = append(msgs, runMsgs...)
		}
		if !keep {
			os.Remove(base + ".json")
			os.Remove(base + ".json.new")
			os.Remove(lp)
		}
		f.Close()
	}
	return msgs
}

// sweepRun removes what the dead run of m left. keep is true when its scratch disk is
// still mounted: the marker stays, for a later sweep.
func sweepRun(m runMarker) (msgs []string, keep bool) {
	var done []string
	if m.Dir != "" && strings.Contains(filepath.Base(m.Dir), "instancestore-run-") {
		d, e, err := sweepDir(m)
		if err != nil {
			return []string{fmt.Sprintf("sweeping the dead run %d: %v", m.PID, err)}, m.ScratchDisk != ""
		}
		done, msgs = d, e
	}
	if m.ScratchDisk != "" {
		d, e := sweepDisk(m)
		done, msgs = append(done, d...), append(msgs, e...)
		keep = len(e) > 0
	}
	what := "nothing was left"
	if len(done) > 0 {
		what = "removed " + strings.Join(done, ", ")
	}
	return append([]string{fmt.Sprintf("swept what a dead agent run left (pid %d, started %s): %s", m.PID, m.Started.Format(time.RFC3339), what)}, msgs...), keep
}

// sweepDisk unmounts the NVMe instance store disk a dead run mounted as its scratch
// (only from the run's mount point, and only that disk), removes the mount point and
// wipes the disk when it is mounted nowhere and holds the agent's scratch filesystem
// (scratchLabel): it is blank again, as the run found it. It never detaches lazily:
// a filesystem still in use is left mounted, and said so.
func sweepDisk(m runMarker) (done, msgs []string) {
	var st unix.Stat_t
	if err := unix.Stat(m.ScratchDisk, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, nil // no such disk (any more)
	}
	major, minor := unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))
	mounts, err := volume.ReadMounts()
	if err != nil {
		return nil, []string{fmt.Sprintf("sweeping the scratch disk %s of the dead run %d: %v", m.ScratchDisk, m.PID, err)}
	}
	point := filepath.Clean(m.ScratchMount)
	for _, mt := range mounts {
		if mt.Point != point || mt.Major != major || mt.Minor != minor {
			continue
		}
		if err := unix.Unmount(point, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return done, []string{fmt.Sprintf("could not unmount the scratch disk %s from %s of the dead run %d: %v", m.ScratchDisk, point, m.PID, err)}
		}
		done = append(done, "scratch disk mount "+point+" ("+m.ScratchDisk+")")
		break // one mount of it there; a second would be someone's since
	}
	if m.ScratchMount != "" {
		if err := os.Remove(point); err == nil {
			done = append(done, "mount point "+point)
		}
	}
	if mounts, err = volume.ReadMounts(); err != nil {
		return done, []string{fmt.Sprintf("sweeping the scratch disk %s of the dead run %d: %v", m.ScratchDisk, m.PID, err)}
	}
	for _, mt := range mounts {
		if mt.Major == major && mt.Minor == minor {
			return done, nil // mounted elsewhere: someone's now
		}
	}
	if !hasScratchLabel(m.ScratchDisk) {
		return done, nil
	}
	if err := wipe(m.ScratchDisk); err != nil {
		return done, []string{fmt.Sprintf("could not wipe the scratch disk %s of the dead run %d: %v", m.ScratchDisk, m.PID, err)}
	}
	return append(done, "scratch filesystem on "+m.ScratchDisk+" (wiped)"), nil
}

// sweepDir removes the dead run's mounts and loop devices under its scratch directory
// and the directory: what it removed, and what it could not.
func sweepDir(m runMarker) (done, msgs []string, err error) {
	dir := filepath.Clean(m.Dir)
	under := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	mounts, err := volume.ReadMounts()
	if err != nil {
		return nil, nil, err
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
	return done, msgs, nil
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
// scratch directory, and the func that releases the run. Without a scratch in the
// request, the run's goes on a mounted instance store volume, else on an unused NVMe
// instance store disk formatted and mounted for it, else in /tmp (pickScratch).
func markRun(ctx context.Context, req *Request, logf func(string, ...any)) (*Request, func(), error) {
	v := *req.Volume
	pick := func() (string, *scratchDisk) {
		if v.Scratch != "" {
			return v.Scratch, nil
		}
		return pickScratch(v.SizeMB, scratchNeed(&v), logf)
	}
	run, err := startRun(ctx, StateDir, pick, logf)
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
			logf("warning: releasing the run's scratch: %v", err)
		}
	}, nil
}
