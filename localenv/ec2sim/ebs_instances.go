package ec2sim

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// instEBS is what the simulator keeps per instance for EBS: the launch spec that
// StartInstances relaunches and the instance store files of the running instance.
type instEBS struct {
	spec    LaunchSpec
	store   []string // NVMe instance store backing files (emptied at every stop, as on EC2)
	ranOnce bool     // it reached running at least once
	// ENA and SR-IOV as ModifyInstanceAttribute set them on the stopped instance
	// (nil/"": the AMI's).
	ena   *bool
	sriov *string
}

// enaOf and sriovOf are the instance's ENA and SR-IOV support: the AMI's, or what
// ModifyInstanceAttribute set. Caller holds mu.
func (s *Server) enaOf(in *instance) bool {
	if ie := s.ebs().insts[in.id]; ie != nil && ie.ena != nil {
		return *ie.ena
	}
	im := s.st.images[in.imageID]
	return im != nil && im.enaSupport
}

func (s *Server) sriovOf(in *instance) string {
	if ie := s.ebs().insts[in.id]; ie != nil && ie.sriov != nil {
		return *ie.sriov
	}
	if im := s.st.images[in.imageID]; im != nil {
		return im.sriov
	}
	return ""
}

// modifyStopped applies the ModifyInstanceAttribute changes EC2 makes only to a
// stopped instance (InstanceType, UserData, Kernel, Ramdisk, EnaSupport,
// SriovNetSupport; the amazon-ebs builder sets ENA and SR-IOV this way before
// CreateImage). They take effect at the next start. Caller holds mu.
func (c *call) modifyStopped(in *instance) (bool, error) {
	given := false
	for _, a := range []string{"InstanceType", "UserData", "Kernel", "Ramdisk", "EnaSupport", "SriovNetSupport"} {
		if c.p.has(a+".Value") || c.p.get("Attribute") == lowerFirst(a) {
			given = true
		}
	}
	if !given {
		return false, nil
	}
	if in.state != stateStopped {
		return false, apiErr(400, "IncorrectInstanceState", "The instance '%s' is not in the 'stopped' state.", in.id)
	}
	ie := c.s.ebs().insts[in.id]
	if ie == nil {
		return false, apiErr(400, "IncorrectInstanceState", "The instance '%s' is not in the 'stopped' state.", in.id)
	}
	value := func(a string) (string, bool) {
		if c.p.has(a + ".Value") {
			return c.p.get(a + ".Value"), true
		}
		if c.p.get("Attribute") == lowerFirst(a) {
			return c.p.get("Value"), true
		}
		return "", false
	}
	if v, ok := value("InstanceType"); ok {
		info, known := lookupInstanceType(v)
		if !known {
			return false, apiErr(400, "InvalidInstanceAttributeValue", "The instance type '%s' does not exist", v)
		}
		if !contains(info.archs, in.arch) || (in.virt == "hvm" && !info.hvm) || (in.virt == "paravirtual" && !info.pv) {
			return false, apiErr(400, "InvalidInstanceAttributeValue", "The instance type '%s' cannot run %s (%s, %s)", v, in.id, in.arch, in.virt)
		}
		in.instanceType, ie.spec.InstanceType = v, v
	}
	if v, ok := value("UserData"); ok {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return false, apiErr(400, "InvalidParameterValue", "Invalid BASE64 encoding of user data.")
		}
		in.userData, ie.spec.UserData = v, b
	}
	if v, ok := value("Kernel"); ok {
		in.kernelID, ie.spec.KernelID = v, v
	}
	if v, ok := value("Ramdisk"); ok {
		in.ramdiskID, ie.spec.RamdiskID = v, v
	}
	if v, ok := value("EnaSupport"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter enaSupport is invalid. Expected a boolean.", v)
		}
		if b && in.virt != "hvm" {
			return false, apiErr(400, "InvalidParameterCombination", "Enhanced networking with the Elastic Network Adapter (ENA) is not supported for paravirtual instances")
		}
		ie.ena = &b
	}
	if v, ok := value("SriovNetSupport"); ok {
		if v != "simple" {
			return false, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter sriovNetSupport is invalid. Valid value: simple", v)
		}
		ie.sriov = &v
	}
	return true, nil
}

// plannedVolume is one EBS volume RunInstances makes: the AMI's mapping entry with the
// request's overrides.
type plannedVolume struct {
	device string
	spec   ebsSpec
	snap   *snapshot
	root   bool
}

// planVolumes merges the AMI's block device mapping with the request's
// (launch_block_device_mappings) as EC2 does: an entry for the same device overrides
// size, type, IOPS, throughput and DeleteOnTermination; NoDevice drops an AMI entry
// (never the root); new devices add empty volumes, volumes from snapshots, or instance
// store. It returns the EBS volumes to make (root first) and the instance store
// entries. Caller holds mu.
func (c *call) planVolumes(im *image, req []blockDevice) ([]plannedVolume, []blockDevice, error) {
	type entry struct {
		b       blockDevice
		fromAMI bool
	}
	var list []entry
	for _, b := range im.blockDevices {
		if b.Ebs != nil {
			cp := *b.Ebs
			b.Ebs = &cp
		}
		list = append(list, entry{b, true})
	}
	isRoot := func(dev string) bool { return im.rootDeviceType == "ebs" && sameDevice(dev, im.rootDeviceName) }
	for _, r := range req {
		i := -1
		for j := range list {
			if sameDevice(list[j].b.DeviceName, r.DeviceName) {
				i = j
			}
		}
		switch {
		case r.NoDevice:
			if isRoot(r.DeviceName) {
				return nil, nil, apiErr(400, "InvalidBlockDeviceMapping", "The root device %s cannot be suppressed with NoDevice", r.DeviceName)
			}
			if i >= 0 {
				list = append(list[:i], list[i+1:]...)
			}
		case r.EBS && i >= 0 && list[i].b.EBS:
			old := list[i].b.Ebs
			if r.Ebs.snapshotID != "" && r.Ebs.snapshotID != old.snapshotID {
				if isRoot(r.DeviceName) {
					return nil, nil, apiErr(400, "InvalidBlockDeviceMapping", "The snapshot of the root device %s is the AMI's (%s); it cannot be replaced by %s", r.DeviceName, old.snapshotID, r.Ebs.snapshotID)
				}
				old.snapshotID = r.Ebs.snapshotID
			}
			if r.Ebs.size != 0 {
				old.size = r.Ebs.size
			}
			if r.Ebs.volType != "" {
				old.volType, old.iops, old.throughput = r.Ebs.volType, 0, 0
			}
			if r.Ebs.iops != 0 {
				old.iops = r.Ebs.iops
			}
			if r.Ebs.throughput != 0 {
				old.throughput = r.Ebs.throughput
			}
			if r.Ebs.deleteOnTermSet {
				old.deleteOnTerm, old.deleteOnTermSet = r.Ebs.deleteOnTerm, true
			}
		default:
			if isRoot(r.DeviceName) {
				return nil, nil, apiErr(400, "InvalidBlockDeviceMapping", "The root device %s of an EBS-backed AMI must stay an EBS volume", r.DeviceName)
			}
			if i >= 0 {
				list[i] = entry{r, false}
			} else {
				list = append(list, entry{r, false})
			}
		}
	}
	var vols []plannedVolume
	var store []blockDevice
	for _, e := range list {
		switch {
		case e.b.EBS:
			sn, err := c.resolveEbs(e.b.DeviceName, e.b.Ebs, true)
			if err != nil {
				return nil, nil, err
			}
			pv := plannedVolume{device: e.b.DeviceName, spec: *e.b.Ebs, snap: sn, root: isRoot(e.b.DeviceName)}
			if !pv.spec.deleteOnTermSet && !pv.root && !e.fromAMI {
				// A volume added at launch is deleted on termination unless told
				// otherwise, like the root (EC2's default for launch mappings).
				pv.spec.deleteOnTerm, pv.spec.deleteOnTermSet = true, true
			}
			if pv.root {
				vols = append([]plannedVolume{pv}, vols...)
			} else {
				vols = append(vols, pv)
			}
		case e.b.VirtualName != "" && !e.b.NoDevice:
			store = append(store, e.b)
		}
	}
	if im.rootDeviceType == "ebs" && (len(vols) == 0 || !vols[0].root) {
		return nil, nil, apiErr(400, "InvalidBlockDeviceMapping", "The AMI %s has no EBS mapping for its root device %s", im.id, im.rootDeviceName)
	}
	return vols, store, nil
}

// makeInstanceVolumes creates the planned volumes for one instance, attached and
// in-use from the start, as EC2 reports volumes made at launch. On failure nothing is
// left. Caller holds mu.
func (s *Server) makeInstanceVolumes(in *instance, plan []plannedVolume, tags []tag) error {
	e := s.ebs()
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return fmt.Errorf("ec2sim: creating EBS dir: %w", err)
	}
	var made []*volume
	now := time.Now().UTC()
	for _, pv := range plan {
		size := pv.spec.size
		if size == 0 {
			size = pv.snap.size
		}
		typ := pv.spec.typ()
		iops, tput := pv.spec.iops, pv.spec.throughput
		switch typ {
		case "gp3":
			iops, tput = max(iops, 3000), max(tput, 125)
		case "gp2":
			iops = min(max(100, 3*size), 16000)
		}
		v := &volume{id: newID("vol"), region: in.region, zone: in.zone, volType: typ, size: size, iops: iops,
			throughput: tput, state: "in-use", created: now, seq: s.st.next()}
		v.path = filepath.Join(e.dir, v.id+".img")
		var err error
		if pv.snap != nil {
			v.snapshotID = pv.snap.id
			err = copySparse(pv.snap.path, v.path, size)
		} else {
			err = sparseFile(v.path, size)
		}
		if err != nil {
			for _, m := range made {
				os.Remove(m.path)
				delete(e.volumes, m.id)
				delete(s.st.tags, m.id)
			}
			return fmt.Errorf("ec2sim: backing file for %s of %s: %w", pv.device, in.id, err)
		}
		v.attach = &attachment{instanceID: in.id, device: pv.device, state: "attached", deleteOnTermination: pv.spec.dot(), at: now}
		e.volumes[v.id] = v
		s.st.setTags(v.id, tags)
		made = append(made, v)
	}
	return nil
}

// instanceVolumes lists what an instance runs with: its attached EBS volumes (the
// root first, then in attachment order) and its instance store files. Caller holds mu.
func (s *Server) instanceVolumes(in *instance) []Volume {
	info, _ := lookupInstanceType(in.instanceType)
	var vs []*volume
	for _, v := range s.ebs().volumes {
		if v.attach != nil && v.attach.instanceID == in.id && v.attach.state != "detaching" {
			vs = append(vs, v)
		}
	}
	isRoot := func(v *volume) bool {
		return in.rootDeviceType == "ebs" && sameDevice(v.attach.device, in.rootDeviceName)
	}
	sort.Slice(vs, func(a, b int) bool {
		if isRoot(vs[a]) != isRoot(vs[b]) {
			return isRoot(vs[a])
		}
		if !vs[a].attach.at.Equal(vs[b].attach.at) {
			return vs[a].attach.at.Before(vs[b].attach.at)
		}
		return vs[a].seq < vs[b].seq
	})
	var out []Volume
	for _, v := range vs {
		out = append(out, Volume{DeviceName: v.attach.device, VolumeID: v.id, Path: v.path, SizeGiB: v.size, Root: isRoot(v), NVMe: info.nvme})
	}
	if ie := s.ebs().insts[in.id]; ie != nil {
		for i, p := range ie.store {
			out = append(out, Volume{DeviceName: fmt.Sprintf("ephemeral%d", i), Path: p, SizeGiB: info.storeGiB, NVMe: true, InstanceStore: true})
		}
	}
	return out
}

// makeInstanceStore creates the empty NVMe instance store disk of a "d" type for one
// run of the instance. Caller holds mu.
func (s *Server) makeInstanceStore(in *instance) error {
	info, _ := lookupInstanceType(in.instanceType)
	ie := s.ebs().insts[in.id]
	if info.storeGiB == 0 || ie == nil {
		return nil
	}
	s.dropInstanceStore(in)
	p := filepath.Join(s.ebs().dir, in.id+"-store0.img")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	if err := sparseFile(p, info.storeGiB); err != nil {
		return fmt.Errorf("ec2sim: instance store of %s: %w", in.id, err)
	}
	ie.store = []string{p}
	return nil
}

// dropInstanceStore removes the instance store files (at stop and termination: their
// data does not survive either). Caller holds mu.
func (s *Server) dropInstanceStore(in *instance) {
	ie := s.ebs().insts[in.id]
	if ie == nil {
		return
	}
	for _, p := range ie.store {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.cfg.Logf("ec2sim: removing instance store %s: %v", p, err)
		}
	}
	ie.store = nil
}

// releaseVolumes runs when an instance is terminated: DeleteOnTermination volumes are
// deleted, the others detached (available). Caller holds mu.
func (s *Server) releaseVolumes(in *instance) {
	e := s.ebs()
	for _, v := range e.volumes {
		if v.attach == nil || v.attach.instanceID != in.id {
			continue
		}
		if v.attach.deleteOnTermination {
			if err := os.Remove(v.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.cfg.Logf("ec2sim: removing %s of terminated %s: %v", v.id, in.id, err)
			}
			delete(e.volumes, v.id)
			delete(s.st.tags, v.id)
			continue
		}
		v.attach, v.state = nil, "available"
	}
	s.dropInstanceStore(in)
	delete(e.insts, in.id)
}

// finishTerminate marks an instance terminated once nothing of it runs. Caller holds mu.
func (s *Server) finishTerminate(in *instance) {
	if in.state == stateTerminated {
		return
	}
	in.state = stateTerminated
	in.run = nil
	close(in.done)
	s.releaseVolumes(in)
	s.cfg.Logf("ec2sim: %s terminated", in.id)
}

type instanceEbsXML struct {
	VolumeID            string `xml:"volumeId"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type instanceBDMXML struct {
	DeviceName string         `xml:"deviceName"`
	Ebs        instanceEbsXML `xml:"ebs"`
}

// instanceBDM is DescribeInstances' blockDeviceMapping: the instance's EBS
// attachments, root first. Caller holds mu.
func (s *Server) instanceBDM(in *instance) []instanceBDMXML {
	var vs []*volume
	for _, v := range s.ebs().volumes {
		if v.attach != nil && v.attach.instanceID == in.id {
			vs = append(vs, v)
		}
	}
	sort.Slice(vs, func(a, b int) bool {
		ra, rb := sameDevice(vs[a].attach.device, in.rootDeviceName), sameDevice(vs[b].attach.device, in.rootDeviceName)
		if ra != rb {
			return ra
		}
		return vs[a].seq < vs[b].seq
	})
	var out []instanceBDMXML
	for _, v := range vs {
		out = append(out, instanceBDMXML{DeviceName: v.attach.device, Ebs: instanceEbsXML{VolumeID: v.id, Status: v.attach.state,
			AttachTime: v.attach.at.Format("2006-01-02T15:04:05.000Z"), DeleteOnTermination: v.attach.deleteOnTermination}})
	}
	return out
}

func stopInstances(c *call) (metaSetter, error) {
	ids := c.p.list("InstanceId")
	if len(ids) == 0 {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter InstanceId")
	}
	if _, _, err := c.p.boolean("Force"); err != nil {
		return nil, err
	}
	if hib, _, err := c.p.boolean("Hibernate"); err != nil {
		return nil, err
	} else if hib {
		return nil, apiErr(400, "UnsupportedHibernationConfiguration", "The instance cannot be hibernated: hibernation is not configured for it")
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ins, err := c.findInstances(ids)
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		if in.rootDeviceType == "instance-store" {
			return nil, apiErr(400, "UnsupportedOperation", "The instance '%s' does not have an 'ebs' root device type and cannot be stopped.", in.id)
		}
		switch in.state {
		case statePending:
			if ie := c.s.ebs().insts[in.id]; ie == nil || !ie.ranOnce {
				return nil, apiErr(400, "IncorrectInstanceState", "Instance '%s' cannot be stopped as it has never reached the 'running' state.", in.id)
			}
			return nil, apiErr(400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can be stopped.", in.id)
		case stateShuttingDown, stateTerminated:
			return nil, apiErr(400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can be stopped.", in.id)
		}
	}
	resp := &struct {
		ResponseMeta
		Changes []stateChangeXML `xml:"instancesSet>item"`
	}{}
	for _, in := range ins {
		prev := instanceStateXML{in.state, in.stateName()}
		if in.state == stateRunning {
			c.s.beginStop(in)
		}
		resp.Changes = append(resp.Changes, stateChangeXML{in.id, instanceStateXML{in.state, in.stateName()}, prev})
	}
	return resp, nil
}

// beginStop moves a running instance to stopping and tears its machine down in the
// background, keeping its volumes; it is stopped once the machine is gone. A
// TerminateInstances meanwhile finishes as a termination. Caller holds mu.
func (s *Server) beginStop(in *instance) {
	in.state = stateStopping
	in.transitionReason = "User initiated (" + time.Now().UTC().Format("2006-01-02 15:04:05 MST") + ")"
	in.stateReason, in.stateReasonMessage = "Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown"
	run := in.run
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := run.Terminate(ctx)
		cancel()
		s.st.mu.Lock()
		defer s.st.mu.Unlock()
		if err != nil {
			s.cfg.Logf("ec2sim: %s stop: %v", in.id, err)
		}
		in.run = nil
		s.dropInstanceStore(in)
		if in.state == stateShuttingDown {
			s.finishTerminate(in)
			return
		}
		in.state = stateStopped
		s.cfg.Logf("ec2sim: %s stopped", in.id)
	}()
}

func startInstances(c *call) (metaSetter, error) {
	ids := c.p.list("InstanceId")
	if len(ids) == 0 {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter InstanceId")
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ins, err := c.findInstances(ids)
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		switch in.state {
		case stateStopping, stateShuttingDown, stateTerminated:
			return nil, apiErr(400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can be started.", in.id)
		case stateStopped:
			if c.s.ebs().insts[in.id] == nil {
				return nil, apiErr(400, "IncorrectInstanceState", "The instance '%s' has nothing to start from.", in.id)
			}
			hasRoot := false
			for _, v := range c.s.instanceVolumes(in) {
				hasRoot = hasRoot || v.Root
			}
			if !hasRoot {
				return nil, apiErr(400, "IncorrectInstanceState", "The instance '%s' has no root volume attached at %s and cannot be started.", in.id, in.rootDeviceName)
			}
		}
	}
	if c.s.cfg.Launcher == nil {
		return nil, apiErr(400, "Unsupported", "this simulator was started without an instance launcher: StartInstances needs one")
	}
	resp := &struct {
		ResponseMeta
		Changes []stateChangeXML `xml:"instancesSet>item"`
	}{}
	for _, in := range ins {
		prev := instanceStateXML{in.state, in.stateName()}
		if in.state == stateStopped {
			if err := c.s.makeInstanceStore(in); err != nil {
				return nil, err
			}
			ie := c.s.ebs().insts[in.id]
			spec := ie.spec
			spec.Volumes = c.s.instanceVolumes(in)
			spec.PrivateIP = in.privateIP
			in.state, in.launchTime = statePending, time.Now().UTC()
			in.stateReason, in.stateReasonMessage, in.transitionReason = "", "", ""
			c.s.wg.Add(1)
			go c.s.launch(in, spec, true)
		}
		resp.Changes = append(resp.Changes, stateChangeXML{in.id, instanceStateXML{in.state, in.stateName()}, prev})
	}
	return resp, nil
}

// hotplug asks a running instance's machine to attach (or detach) a volume when it
// can (VolumeAttacher), outside mu, and moves the attachment on when that is done.
// An attach the machine refused leaves the volume available, with the reason logged.
// Caller holds mu.
func (s *Server) hotplug(in *instance, v *volume, a *attachment, attach bool, done func()) bool {
	at, ok := in.run.(VolumeAttacher)
	if !ok || in.state != stateRunning || s.ctx.Err() != nil {
		return false
	}
	info, _ := lookupInstanceType(in.instanceType)
	vol := Volume{DeviceName: a.device, VolumeID: v.id, Path: v.path, SizeGiB: v.size, NVMe: info.nvme}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
		var err error
		if attach {
			err = at.AttachVolume(ctx, vol)
		} else {
			err = at.DetachVolume(ctx, vol)
		}
		cancel()
		s.st.mu.Lock()
		defer s.st.mu.Unlock()
		if err != nil {
			s.cfg.Logf("ec2sim: %s: %s %s at %s: %v", in.id, map[bool]string{true: "attaching", false: "detaching"}[attach], v.id, a.device, err)
			if attach && v.attach == a {
				v.attach, v.state = nil, "available"
			}
			if attach {
				return
			}
		}
		done()
	}()
	return true
}
