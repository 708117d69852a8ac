package ec2sim

import (
	"strings"
	"time"
)

// ebsSpec is the Ebs structure of one block device mapping entry (RegisterImage,
// RunInstances), as given: zero values are "not set" and take EC2's defaults when the
// volume is made.
type ebsSpec struct {
	snapshotID       string
	size             int // GiB; 0: the snapshot's size
	volType          string
	iops, throughput int
	deleteOnTerm     bool
	deleteOnTermSet  bool
	encrypted        bool
}

// parseEbsSpec reads BlockDeviceMapping.N.Ebs.*.
func parseEbsSpec(eb params, dev string) (*ebsSpec, error) {
	sp := &ebsSpec{snapshotID: eb.get("SnapshotId"), volType: eb.get("VolumeType")}
	var err error
	if sp.size, err = eb.integer("VolumeSize", 0); err != nil {
		return nil, err
	}
	if sp.iops, err = eb.integer("Iops", 0); err != nil {
		return nil, err
	}
	if sp.throughput, err = eb.integer("Throughput", 0); err != nil {
		return nil, err
	}
	if sp.deleteOnTerm, sp.deleteOnTermSet, err = eb.boolean("DeleteOnTermination"); err != nil {
		return nil, err
	}
	if sp.encrypted, _, err = eb.boolean("Encrypted"); err != nil {
		return nil, err
	}
	if sp.encrypted {
		return nil, apiErr(400, "InvalidParameterValue", "Encrypted EBS volumes are not supported by the simulator (%s): it has no KMS", dev)
	}
	if sp.snapshotID != "" && !snapIDRe.MatchString(sp.snapshotID) {
		return nil, apiErr(400, "InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", sp.snapshotID)
	}
	if sp.size < 0 {
		return nil, apiErr(400, "InvalidBlockDeviceMapping", "Invalid volume size %d for %s", sp.size, dev)
	}
	return sp, nil
}

// typ is the volume type, gp2 when not given (EC2's default for block device mappings).
func (sp *ebsSpec) typ() string {
	if sp.volType == "" {
		return "gp2"
	}
	return sp.volType
}

// dot is DeleteOnTermination, true when not given.
func (sp *ebsSpec) dot() bool { return !sp.deleteOnTermSet || sp.deleteOnTerm }

func (sp *ebsSpec) xml() *ebsXML {
	if sp == nil {
		return &ebsXML{DeleteOnTermination: true}
	}
	return &ebsXML{SnapshotID: sp.snapshotID, VolumeSize: sp.size, DeleteOnTermination: sp.dot(), VolumeType: sp.typ(),
		Iops: sp.iops, Throughput: sp.throughput}
}

func sameDevice(a, b string) bool {
	return strings.TrimPrefix(a, "/dev/") == strings.TrimPrefix(b, "/dev/")
}

// resolve checks an EBS mapping entry against its snapshot as EC2 does and fills the
// size from it: the snapshot must exist, be completed and belong to the caller (or be
// a public snapshot when public is true), and the volume must be at least as big.
// Caller holds mu.
func (c *call) resolveEbs(dev string, sp *ebsSpec, public bool) (*snapshot, error) {
	var sn *snapshot
	if sp.snapshotID != "" {
		var err error
		if sn, err = c.lookupSnapshot(sp.snapshotID); err != nil {
			return nil, err
		}
		if sn.owner != c.s.st.account && !(public && sn.public) {
			return nil, apiErr(400, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", sn.id)
		}
		if sn.state != "completed" {
			return nil, apiErr(400, "IncorrectState", "Snapshot '%s' is not 'completed'.", sn.id)
		}
		if sp.size != 0 && sp.size < sn.size {
			return nil, apiErr(400, "InvalidBlockDeviceMapping", "Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB", sp.size, sn.id, sn.size)
		}
	} else if sp.size == 0 {
		return nil, apiErr(400, "InvalidBlockDeviceMapping", "Either snapshot ID or volume size must be provided for: %s", dev)
	}
	size := sp.size
	if size == 0 {
		size = sn.size
	}
	iops, tput := sp.iops, sp.throughput
	if sp.typ() == "gp3" {
		iops, tput = max(iops, 3000), max(tput, 125)
	}
	if err := checkVolumeSpec(sp.typ(), size, iops, tput); err != nil {
		return nil, err
	}
	return sn, nil
}

// registerEBS registers an EBS-backed AMI whose root is a snapshot, checking the
// block device mapping as EC2 does. im carries the request's attributes.
func (c *call) registerEBS(im *image, tags []tag) (metaSetter, error) {
	if im.rootDeviceName == "" {
		im.rootDeviceName = "/dev/sda1"
	}
	var root *blockDevice
	for i := range im.blockDevices {
		if sameDevice(im.blockDevices[i].DeviceName, im.rootDeviceName) {
			root = &im.blockDevices[i]
		}
	}
	if len(im.blockDevices) == 0 {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter ImageLocation (instance store-backed AMI) or a BlockDeviceMapping with the root device's snapshot (EBS-backed AMI)")
	}
	if root == nil {
		return nil, apiErr(400, "InvalidBlockDeviceMapping", "The root device name %s is not in the block device mapping", im.rootDeviceName)
	}
	if !root.EBS || root.Ebs.snapshotID == "" {
		return nil, apiErr(400, "InvalidBlockDeviceMapping", "The root device %s of an EBS-backed AMI needs Ebs.SnapshotId", root.DeviceName)
	}
	if root.NoDevice {
		return nil, apiErr(400, "InvalidBlockDeviceMapping", "The root device %s cannot be NoDevice", root.DeviceName)
	}
	if im.arch == "" {
		im.arch = "i386" // RegisterImage's default for EBS-backed AMIs
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for i := range im.blockDevices {
		b := &im.blockDevices[i]
		if !b.EBS {
			continue
		}
		if _, err := c.resolveEbs(b.DeviceName, b.Ebs, false); err != nil {
			return nil, err
		}
	}
	if err := c.checkNameFree(im.name); err != nil {
		return nil, err
	}
	if err := c.stillWanted(); err != nil {
		return nil, err
	}
	im.id, im.region, im.owner, im.state = newID("ami"), c.region, st.account, "pending"
	im.location = st.account + "/" + im.name
	im.rootDeviceType, im.created, im.seq = "ebs", time.Now().UTC(), st.next()
	st.images[im.id] = im
	st.setTags(im.id, tags)
	c.s.becomeAvailable(im)
	c.s.cfg.Logf("ec2sim: registered EBS-backed %s (%s) from %s", im.id, im.name, root.Ebs.snapshotID)
	return &struct {
		ResponseMeta
		ImageID string `xml:"imageId"`
	}{ImageID: im.id}, nil
}

// snapshotInUse names the AMI whose block device mapping holds the snapshot, or "".
// Caller holds mu.
func (s *Server) snapshotInUse(id string) string {
	for _, im := range s.st.images {
		if im.state == "deregistered" {
			continue
		}
		for _, b := range im.blockDevices {
			if b.Ebs != nil && b.Ebs.snapshotID == id {
				return im.id
			}
		}
	}
	return ""
}
