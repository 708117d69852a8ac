package ec2sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// createImage makes an EBS-backed AMI of an EBS-backed instance (running or stopped):
// a snapshot of each of its volumes (pending, then completed) and an AMI that is
// pending until they are. The simulator never reboots the instance (NoReboot or not):
// the snapshots are taken of the volumes' files as they are, so a guest should sync
// first, as with NoReboot on EC2.
func createImage(c *call) (metaSetter, error) {
	name := c.p.get("Name")
	if name == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter name")
	}
	if !amiNamePattern.MatchString(name) {
		return nil, apiErr(400, "InvalidAMIName.Malformed", "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/' and '_'")
	}
	if _, _, err := c.p.boolean("NoReboot"); err != nil {
		return nil, err
	}
	req, err := c.parseBlockDevices()
	if err != nil {
		return nil, err
	}
	imgTags, err := c.p.tagSpecs("image")
	if err != nil {
		return nil, err
	}
	snapTags, err := c.p.tagSpecs("snapshot")
	if err != nil {
		return nil, err
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ins, err := c.findInstances([]string{c.p.get("InstanceId")})
	if err != nil {
		return nil, err
	}
	in := ins[0]
	if in.rootDeviceType != "ebs" {
		return nil, apiErr(400, "InvalidParameterValue", "The instance '%s' is not EBS-backed: CreateImage needs an 'ebs' root device; bundle instance store-backed instances instead", in.id)
	}
	if in.state != stateRunning && in.state != stateStopped {
		return nil, apiErr(400, "IncorrectInstanceState", "The instance '%s' is not in the 'running' or 'stopped' state.", in.id)
	}
	if err := c.checkNameFree(name); err != nil {
		return nil, err
	}
	if err := c.stillWanted(); err != nil {
		return nil, err
	}
	src := st.images[in.imageID]
	im := &image{id: newID("ami"), name: name, description: c.p.get("Description"), region: c.region, owner: st.account,
		state: "pending", arch: in.arch, virt: in.virt, rootDeviceType: "ebs", rootDeviceName: in.rootDeviceName,
		kernelID: in.kernelID, ramdiskID: in.ramdiskID, created: time.Now().UTC(), seq: st.next()}
	im.location = st.account + "/" + name
	if src != nil {
		im.bootMode, im.tpmSupport, im.imdsSupport = src.bootMode, src.tpmSupport, src.imdsSupport
	}
	im.enaSupport, im.sriov = c.s.enaOf(in), c.s.sriovOf(in)
	suppressed := func(dev string) bool {
		for _, r := range req {
			if r.NoDevice && sameDevice(r.DeviceName, dev) {
				return true
			}
		}
		return false
	}
	e := c.s.ebs()
	var made []*snapshot
	for _, vol := range c.s.instanceVolumes(in) {
		if vol.InstanceStore || (suppressed(vol.DeviceName) && !vol.Root) {
			continue
		}
		v := e.volumes[vol.VolumeID]
		sn := &snapshot{id: newID("snap"), region: c.region, volumeID: v.id, owner: st.account, state: "pending", size: v.size,
			description: fmt.Sprintf("Created by CreateImage(%s) for %s", in.id, im.id), started: time.Now().UTC(), seq: st.next()}
		sn.path = filepath.Join(e.dir, sn.id+".img")
		if err := copySparse(v.path, sn.path, 0); err != nil {
			dropSnapshots(c.s, made)
			return nil, fmt.Errorf("ec2sim: snapshot of %s for CreateImage: %w", v.id, err)
		}
		e.snapshots[sn.id] = sn
		made = append(made, sn)
		sp := &ebsSpec{snapshotID: sn.id, size: v.size, volType: v.volType, deleteOnTerm: v.attach.deleteOnTermination, deleteOnTermSet: true}
		switch v.volType {
		case "gp3":
			sp.iops, sp.throughput = v.iops, v.throughput
		case "io1", "io2":
			sp.iops = v.iops
		}
		im.blockDevices = append(im.blockDevices, blockDevice{DeviceName: vol.DeviceName, EBS: true, VolumeSize: v.size, Ebs: sp})
	}
	// The instance's instance store mappings, and those the request adds.
	if ie := e.insts[in.id]; ie != nil {
		for _, b := range ie.spec.BlockDevices {
			if !suppressed(b.DeviceName) {
				im.blockDevices = append(im.blockDevices, blockDevice{DeviceName: b.DeviceName, VirtualName: b.VirtualName})
			}
		}
	}
	// The request's EBS entries (amazon-ebs' ami_block_device_mappings) change the
	// size, type and DeleteOnTermination of a snapshotted device or add one (empty, or
	// from a snapshot); instance store entries are added as given.
	for _, r := range req {
		switch {
		case r.VirtualName != "":
			im.blockDevices = append(im.blockDevices, r)
		case r.EBS:
			i := -1
			for j := range im.blockDevices {
				if sameDevice(im.blockDevices[j].DeviceName, r.DeviceName) && im.blockDevices[j].Ebs != nil {
					i = j
				}
			}
			if i < 0 {
				if _, err := c.resolveEbs(r.DeviceName, r.Ebs, true); err != nil {
					dropSnapshots(c.s, made)
					return nil, err
				}
				im.blockDevices = append(im.blockDevices, r)
				continue
			}
			b := &im.blockDevices[i]
			if r.Ebs.snapshotID != "" && r.Ebs.snapshotID != b.Ebs.snapshotID {
				dropSnapshots(c.s, made)
				return nil, apiErr(400, "InvalidBlockDeviceMapping", "The device %s of %s is imaged into a snapshot of its own; its mapping cannot name %s", r.DeviceName, in.id, r.Ebs.snapshotID)
			}
			if r.Ebs.size != 0 {
				if r.Ebs.size < b.Ebs.size {
					dropSnapshots(c.s, made)
					return nil, apiErr(400, "InvalidBlockDeviceMapping", "Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB", r.Ebs.size, b.Ebs.snapshotID, b.Ebs.size)
				}
				b.Ebs.size, b.VolumeSize = r.Ebs.size, r.Ebs.size
			}
			if r.Ebs.volType != "" {
				b.Ebs.volType, b.Ebs.iops, b.Ebs.throughput = r.Ebs.volType, r.Ebs.iops, r.Ebs.throughput
			}
			if r.Ebs.deleteOnTermSet {
				b.Ebs.deleteOnTerm = r.Ebs.deleteOnTerm
			}
		}
	}
	for _, sn := range made {
		st.setTags(sn.id, snapTags)
	}
	st.images[im.id] = im
	st.setTags(im.id, imgTags)
	c.s.completeSnapshots(made, func() { c.s.becomeAvailable(im) })
	c.s.cfg.Logf("ec2sim: creating %s (%s) from %s: %d snapshots", im.id, name, in.id, len(made))
	return &struct {
		ResponseMeta
		ImageID string `xml:"imageId"`
	}{ImageID: im.id}, nil
}

// completeSnapshots moves pending snapshots to completed (through 50%) as
// CreateSnapshot's do, then runs then. Caller holds mu.
func (s *Server) completeSnapshots(sns []*snapshot, then func()) {
	s.later(func() {
		for _, sn := range sns {
			sn.progress = 50
		}
		s.later(func() {
			for _, sn := range sns {
				if sn.state == "pending" {
					sn.state, sn.progress = "completed", 100
				}
			}
			if s.ctx.Err() == nil { // closing: Close may be waiting on wg already
				then()
			}
		})
	})
}

// dropSnapshots undoes snapshots made for a call that failed. Caller holds mu.
func dropSnapshots(s *Server, sns []*snapshot) {
	for _, sn := range sns {
		removeFile(s, sn.path)
		delete(s.ebs().snapshots, sn.id)
	}
}

func removeFile(s *Server, path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.cfg.Logf("ec2sim: removing %s: %v", path, err)
	}
}

// copyEBSImage gives a CopyImage of an EBS-backed AMI snapshots of its own in the
// destination region, as EC2 does; cp's mapping is rewritten to them and cp becomes
// available once they complete. Caller holds mu.
func (c *call) copyEBSImage(src, cp *image) error {
	e := c.s.ebs()
	var made []*snapshot
	cp.blockDevices = append([]blockDevice(nil), src.blockDevices...)
	for i := range cp.blockDevices {
		b := &cp.blockDevices[i]
		if b.Ebs == nil || b.Ebs.snapshotID == "" {
			continue
		}
		from := e.snapshots[b.Ebs.snapshotID]
		if from == nil {
			return apiErr(400, "InvalidSnapshot.NotFound", "The snapshot '%s' of %s does not exist.", b.Ebs.snapshotID, src.id)
		}
		sn := &snapshot{id: newID("snap"), region: cp.region, volumeID: "vol-ffffffff", owner: c.s.st.account, state: "pending", size: from.size,
			description: fmt.Sprintf("Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot %s", cp.id, src.id, from.id),
			started:     time.Now().UTC(), seq: c.s.st.next()}
		sn.path = filepath.Join(e.dir, sn.id+".img")
		if err := copySparse(from.path, sn.path, 0); err != nil {
			dropSnapshots(c.s, made)
			return fmt.Errorf("ec2sim: copying %s for %s: %w", from.id, cp.id, err)
		}
		e.snapshots[sn.id] = sn
		made = append(made, sn)
		spec := *b.Ebs
		spec.snapshotID = sn.id
		b.Ebs = &spec
	}
	c.s.completeSnapshots(made, func() { c.s.becomeAvailable(cp) })
	return nil
}
