package vm

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// storeType is one instance type's instance store: Count disks of SizeGB each.
type storeType struct {
	Count  int
	SizeGB int
	// NVMe: the disks are NVMe devices (Nitro "d" types), handed over unformatted.
	NVMe bool
	// Format is the file system EC2 puts on the disks before the instance boots: the
	// EC2 user guide says many instance store volumes are pre-formatted with ext3,
	// while SSD volumes that support TRIM (I2, R3 and every NVMe instance store) are
	// not formatted. Empty: unformatted.
	Format string
}

// instanceStores is EC2's instance store table (the instance type pages of the EC2
// user guide) for the types the simulator runs and a few Nitro ones. A type missing
// here has no instance store (t2, t3, m5, c5, ...: EBS only).
var instanceStores = map[string]storeType{
	"m1.small": {1, 160, false, "ext3"}, "m1.medium": {1, 410, false, "ext3"},
	"m1.large": {2, 420, false, "ext3"}, "m1.xlarge": {4, 420, false, "ext3"},
	"c1.medium": {1, 350, false, "ext3"}, "c1.xlarge": {4, 420, false, "ext3"},
	"m2.xlarge": {1, 420, false, "ext3"}, "m2.2xlarge": {1, 850, false, "ext3"}, "m2.4xlarge": {2, 840, false, "ext3"},
	"m3.medium": {1, 4, false, "ext3"}, "m3.large": {1, 32, false, "ext3"},
	"m3.xlarge": {2, 40, false, "ext3"}, "m3.2xlarge": {2, 80, false, "ext3"},
	"c3.large": {2, 16, false, "ext3"}, "c3.xlarge": {2, 40, false, "ext3"},
	"c3.2xlarge": {2, 80, false, "ext3"}, "c3.4xlarge": {2, 160, false, "ext3"}, "c3.8xlarge": {2, 320, false, "ext3"},
	"r3.large": {1, 32, false, ""}, "r3.xlarge": {1, 80, false, ""}, "r3.2xlarge": {1, 160, false, ""},
	"r3.4xlarge": {1, 320, false, ""}, "r3.8xlarge": {2, 320, false, ""},
	"i2.xlarge": {1, 800, false, ""}, "i2.2xlarge": {2, 800, false, ""}, "i2.4xlarge": {4, 800, false, ""}, "i2.8xlarge": {8, 800, false, ""},
	"d2.xlarge": {3, 2000, false, ""}, "d2.2xlarge": {6, 2000, false, ""},
	"m5d.large": {1, 75, true, ""}, "m5d.xlarge": {1, 150, true, ""},
	"c5d.large": {1, 50, true, ""}, "c5d.xlarge": {1, 100, true, ""},
}

// storeDisk is one instance store volume an instance gets.
type storeDisk struct {
	VirtualName string // ephemeral0
	DeviceName  string // /dev/sdb
	SizeBytes   int64
	NVMe        bool
	Format      string
}

// planInstanceStore lists the instance store volumes of an instance of itype whose
// AMI maps mappings, in device name order (the order the guest finds them in, after
// the root disk): only ephemeralN entries that the type has (N < its count) appear,
// as on EC2, where a mapping beyond the type's volumes is ignored. NVMe types expose
// all their instance store volumes whatever the mapping, as Nitro does.
func planInstanceStore(itype string, mappings []ec2sim.DeviceMapping) []storeDisk {
	st, ok := instanceStores[itype]
	if !ok {
		return nil
	}
	var out []storeDisk
	seen := map[int]bool{}
	for _, m := range mappings {
		n, ok := ephemeralIndex(m.VirtualName)
		if !ok || n >= st.Count || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, storeDisk{VirtualName: m.VirtualName, DeviceName: m.DeviceName,
			SizeBytes: int64(st.SizeGB) << 30, NVMe: st.NVMe, Format: st.Format})
	}
	if st.NVMe {
		for n := 0; n < st.Count; n++ {
			if !seen[n] {
				out = append(out, storeDisk{VirtualName: "ephemeral" + strconv.Itoa(n), SizeBytes: int64(st.SizeGB) << 30, NVMe: true})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].DeviceName == "") != (out[j].DeviceName == "") {
			return out[i].DeviceName != ""
		}
		return out[i].DeviceName < out[j].DeviceName
	})
	return out
}

func ephemeralIndex(v string) (int, bool) {
	s, ok := strings.CutPrefix(v, "ephemeral")
	if !ok || s == "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 23 {
		return 0, false
	}
	return n, true
}

// mkfsArgs is the mke2fs command that formats a disk file as EC2 formats the volume.
// The inode ratio and journal size keep a sparse 160 GB file at a few tens of MB on
// the host; the guest sees a file system of the full size.
func (d storeDisk) mkfsArgs(path string) []string {
	return []string{"-q", "-F", "-t", d.Format, "-T", "largefile4", "-J", "size=32", "-E", "nodiscard",
		path, fmt.Sprintf("%dk", d.SizeBytes>>10)}
}
