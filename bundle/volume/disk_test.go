package volume

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFreshLayouts writes new MBR and GPT tables (no source disk) into files and
// checks them with the partitioning tools.
func TestFreshLayouts(t *testing.T) {
	for _, table := range []string{PartitionMBR, PartitionGPT} {
		t.Run(table, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "disk")
			must(t, os.WriteFile(f, nil, 0o600))
			const total = 64 << 20 / sectorSize
			must(t, os.Truncate(f, total*sectorSize))
			l := FreshLayout(table)
			fsSectors := int64(total) - l.RootStart - l.Overhead()/sectorSize
			w, err := os.OpenFile(f, os.O_RDWR, 0)
			must(t, err)
			must(t, l.WriteTable(w, total, fsSectors))
			w.Close()
			tab := sfdiskJSON(t, f)
			if len(tab.PartitionTable.Partitions) != 1 {
				t.Fatalf("partitions %+v", tab.PartitionTable.Partitions)
			}
			p := tab.PartitionTable.Partitions[0]
			if p.Start != 2048 || p.Size != fsSectors {
				t.Errorf("root partition %+v, want start 2048 size %d", p, fsSectors)
			}
			if table == PartitionGPT {
				if out := run(t, "sgdisk", "-v", f); !strings.Contains(out, "No problems found") {
					t.Errorf("sgdisk -v:\n%s", out)
				}
				if !strings.EqualFold(p.Type, "0FC63DAF-8483-4772-8E79-3D69D8477DE4") {
					t.Errorf("type %s, want Linux filesystem", p.Type)
				}
			} else if p.Type != "83" || !p.Bootable {
				t.Errorf("partition %+v, want bootable type 83", p)
			}
			// A root that does not fit is refused.
			w, _ = os.OpenFile(f, os.O_RDWR, 0)
			defer w.Close()
			if err := l.WriteTable(w, total, total); err == nil {
				t.Error("an oversized root partition was accepted")
			}
		})
	}
}

// TestFindSourceDisk reads a partition's disk and start from a sysfs tree laid out as
// the kernel does (a partition directory inside its disk's directory).
func TestFindSourceDisk(t *testing.T) {
	// The "disk" is an existing block device node, so that devNode finds it by name.
	var st unix.Stat_t
	blockDev := ""
	entries, _ := os.ReadDir("/dev")
	for _, e := range entries {
		if unix.Stat("/dev/"+e.Name(), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			blockDev = e.Name()
			break
		}
	}
	if blockDev == "" {
		t.Fatal("no block device in /dev")
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	sys := t.TempDir()
	disk := filepath.Join(sys, "devices/virtual/block/vdz")
	part := filepath.Join(disk, "vdz3")
	must(t, os.MkdirAll(part, 0o755))
	writeFile(t, filepath.Join(disk, "dev"), []byte(strings.TrimSpace(itoa(maj)+":"+itoa(min))+"\n"), 0o644)
	writeFile(t, filepath.Join(disk, "uevent"), []byte("DEVNAME="+blockDev+"\n"), 0o644)
	writeFile(t, filepath.Join(part, "partition"), []byte("3\n"), 0o644)
	writeFile(t, filepath.Join(part, "start"), []byte("227328\n"), 0o644)
	must(t, os.MkdirAll(filepath.Join(sys, "dev/block"), 0o755))
	must(t, os.Symlink(disk, filepath.Join(sys, "dev/block", itoa(maj)+":"+itoa(min))))
	must(t, os.Symlink(part, filepath.Join(sys, "dev/block/254:3")))
	d, err := findSourceDisk(sys, 254, 3, t.TempDir())
	if err != nil || d == nil {
		t.Fatalf("findSourceDisk: %v, %v", d, err)
	}
	if d.Path != "/dev/"+blockDev || d.PartNumber != 3 || d.Start != 227328 {
		t.Errorf("got %+v, want /dev/"+blockDev+" partition 3 at 227328", d)
	}
	// A whole disk is not a partition.
	if d, err := findSourceDisk(sys, maj, min, t.TempDir()); d != nil || err != nil {
		t.Errorf("whole disk: %+v, %v", d, err)
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func TestBuildRefusesBadOptions(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Partition: "hybrid", PlanConfig: PlanConfig{Scratch: t.TempDir()}}, "partition layout"},
		{Config{}, "scratch"},
	} {
		if _, err := Build(context.Background(), c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Build(%+v) error %v, want %q", c.cfg, err, c.want)
		}
	}
}
