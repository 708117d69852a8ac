package ec2sim

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"
)

// ebsDelay is how long a volume or snapshot stays in a transitional state, so that
// clients poll with waiters as they must on EC2.
var ebsDelay = 300 * time.Millisecond

// volume is an EBS volume, backed by a sparse file of its size under DataDir/ebs.
type volume struct {
	id, region, zone, volType, snapshotID string
	size, iops, throughput                int
	state                                 string // creating | available | in-use | deleting
	attach                                *attachment
	path                                  string
	created                               time.Time
	seq                                   int64
}

type attachment struct {
	instanceID, device, state string // attaching | attached | detaching
	deleteOnTermination       bool
	at                        time.Time
}

// snapshot is a point-in-time copy of a volume's file.
type snapshot struct {
	id, region, volumeID, description, state string // pending | completed | error
	owner                                    string // the caller's account, or amazon's for seeded AMIs
	public                                   bool   // anyone may make volumes of it (seeded AMIs' roots)
	size                                     int
	progress                                 int
	path                                     string
	started                                  time.Time
	seq                                      int64
}

// ebsStore holds a server's volumes and snapshots, guarded by the state's mu. It lives
// beside state (not in it) so EBS stays in its own files.
type ebsStore struct {
	dir       string
	volumes   map[string]*volume
	snapshots map[string]*snapshot
	insts     map[string]*instEBS // per instance: what StartInstances relaunches, instance store files
	timers    []*time.Timer
	closed    bool
}

var ebsStores sync.Map // *Server -> *ebsStore

func (s *Server) ebs() *ebsStore {
	if v, ok := ebsStores.Load(s); ok {
		return v.(*ebsStore)
	}
	v, _ := ebsStores.LoadOrStore(s, &ebsStore{dir: filepath.Join(s.cfg.DataDir, "ebs"),
		volumes: map[string]*volume{}, snapshots: map[string]*snapshot{}, insts: map[string]*instEBS{}})
	return v.(*ebsStore)
}

// later runs fn under mu after ebsDelay, unless the server has closed. Caller holds mu.
func (s *Server) later(fn func()) {
	e := s.ebs()
	e.timers = append(e.timers, time.AfterFunc(ebsDelay, func() {
		s.st.mu.Lock()
		defer s.st.mu.Unlock()
		if !e.closed {
			fn()
		}
	}))
}

// closeEBS stops pending transitions and removes every volume and snapshot file.
func (s *Server) closeEBS() error {
	v, ok := ebsStores.LoadAndDelete(s)
	if !ok {
		return nil
	}
	e := v.(*ebsStore)
	s.st.mu.Lock()
	e.closed = true
	for _, t := range e.timers {
		t.Stop()
	}
	s.st.mu.Unlock()
	if err := os.RemoveAll(e.dir); err != nil {
		return fmt.Errorf("ec2sim: removing EBS data %s: %w", e.dir, err)
	}
	return nil
}

var (
	volIDRe  = regexp.MustCompile(`^vol-[0-9a-f]{8}([0-9a-f]{9})?$`)
	snapIDRe = regexp.MustCompile(`^snap-[0-9a-f]{8}([0-9a-f]{9})?$`)
	// device names EC2 accepts for Linux attachments.
	deviceRe = regexp.MustCompile(`^(/dev/(sd[b-z]|xvd[b-z][a-z]?|sd[b-z][1-9]?|hd[a-z]))$`)
)

// volLimits are EC2's size (GiB) and IOPS limits per volume type.
var volLimits = map[string]struct{ minSize, maxSize int }{
	"gp2": {1, 16384}, "gp3": {1, 16384}, "io1": {4, 16384}, "io2": {4, 65536},
	"st1": {125, 16384}, "sc1": {125, 16384}, "standard": {1, 1024},
}

// lookupVolume finds a volume by id in the call's region. Caller holds mu.
func (c *call) lookupVolume(id string) (*volume, error) {
	if id == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter VolumeId")
	}
	if !volIDRe.MatchString(id) {
		return nil, apiErr(400, "InvalidVolumeID.Malformed", "Invalid id: \"%s\" (expecting \"vol-...\")", id)
	}
	v, ok := c.s.ebs().volumes[id]
	if !ok || v.region != c.region {
		return nil, apiErr(400, "InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
	}
	return v, nil
}

func (c *call) lookupSnapshot(id string) (*snapshot, error) {
	if id == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter SnapshotId")
	}
	if !snapIDRe.MatchString(id) {
		return nil, apiErr(400, "InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", id)
	}
	sn, ok := c.s.ebs().snapshots[id]
	if !ok || sn.region != c.region {
		return nil, apiErr(400, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
	}
	return sn, nil
}

// checkVolumeSpec applies EC2's CreateVolume rules for type, size, IOPS and throughput.
func checkVolumeSpec(typ string, size, iops, tput int) error {
	lim, ok := volLimits[typ]
	if !ok {
		return apiErr(400, "InvalidParameterValue", "Value (%s) for parameter volumeType is invalid. Valid values: standard, io1, io2, gp2, gp3, sc1, st1", typ)
	}
	if size < lim.minSize || size > lim.maxSize {
		return apiErr(400, "InvalidParameterValue", "Volume of %dGiB is out of range for %s: %d-%d GiB", size, typ, lim.minSize, lim.maxSize)
	}
	switch typ {
	case "io1", "io2":
		if iops == 0 {
			return apiErr(400, "MissingParameter", "The request must contain the parameter iops for volume type %s", typ)
		}
		ratio, max := 50, 64000
		if typ == "io2" {
			ratio, max = 1000, 256000
		}
		if iops < 100 || iops > max {
			return apiErr(400, "InvalidParameterValue", "Iops %d for %s must be between 100 and %d", iops, typ, max)
		}
		if iops > ratio*size {
			return apiErr(400, "InvalidParameterValue", "Iops to volume size ratio of %d is too high; maximum is %d", iops/size, ratio)
		}
	case "gp3":
		if iops != 0 && (iops < 3000 || iops > 16000) {
			return apiErr(400, "InvalidParameterValue", "Iops %d for gp3 must be between 3000 and 16000", iops)
		}
		if iops > 3000 && iops > 500*size {
			return apiErr(400, "InvalidParameterValue", "Iops to volume size ratio of %d is too high; maximum is 500", iops/size)
		}
		if tput != 0 && (tput < 125 || tput > 1000) {
			return apiErr(400, "InvalidParameterValue", "Throughput %d for gp3 must be between 125 and 1000 MiB/s", tput)
		}
	default:
		if iops != 0 {
			return apiErr(400, "InvalidParameterCombination", "The parameter iops is not supported for %s volumes", typ)
		}
	}
	if tput != 0 && typ != "gp3" {
		return apiErr(400, "InvalidParameterCombination", "The parameter throughput is only supported for gp3 volumes")
	}
	return nil
}

type volumeXML struct {
	ID          string          `xml:"volumeId"`
	Size        int             `xml:"size"`
	SnapshotID  string          `xml:"snapshotId"`
	Zone        string          `xml:"availabilityZone"`
	Status      string          `xml:"status"`
	CreateTime  string          `xml:"createTime"`
	Attach      []attachmentXML `xml:"attachmentSet>item"`
	Tags        []tag           `xml:"tagSet>item"`
	Type        string          `xml:"volumeType"`
	Iops        int             `xml:"iops,omitempty"`
	Throughput  int             `xml:"throughput,omitempty"`
	Encrypted   bool            `xml:"encrypted"`
	MultiAttach bool            `xml:"multiAttachEnabled"`
}

type attachmentXML struct {
	VolumeID   string `xml:"volumeId"`
	InstanceID string `xml:"instanceId"`
	Device     string `xml:"device"`
	Status     string `xml:"status"`
	AttachTime string `xml:"attachTime"`
	DeleteOnT  bool   `xml:"deleteOnTermination"`
}

func (st *state) volumeXML(v *volume) volumeXML {
	x := volumeXML{ID: v.id, Size: v.size, SnapshotID: v.snapshotID, Zone: v.zone, Status: v.state,
		CreateTime: v.created.Format(time.RFC3339), Tags: st.tagsOf(v.id), Type: v.volType, Iops: v.iops, Throughput: v.throughput}
	if a := v.attach; a != nil {
		x.Attach = []attachmentXML{a.xml(v.id)}
	}
	return x
}

func (a *attachment) xml(volID string) attachmentXML {
	return attachmentXML{VolumeID: volID, InstanceID: a.instanceID, Device: a.device, Status: a.state,
		AttachTime: a.at.Format(time.RFC3339), DeleteOnT: a.deleteOnTermination}
}

// sparseFile creates path as a sparse file of size GiB.
func sparseFile(path string, gib int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(gib) << 30); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// copySparse copies src to dst keeping holes (and sharing extents where the file
// system can), then grows dst to gib GiB.
func copySparse(src, dst string, gib int) error {
	if out, err := exec.Command("cp", "--reflink=auto", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		os.Remove(dst)
		return fmt.Errorf("copying %s: %v: %s", src, err, out)
	}
	if gib > 0 {
		if err := os.Truncate(dst, int64(gib)<<30); err != nil {
			os.Remove(dst)
			return err
		}
	}
	return nil
}

func createVolume(c *call) (metaSetter, error) {
	zone := c.p.get("AvailabilityZone")
	if zone == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter AvailabilityZone")
	}
	if !contains(zonesOf(c.region), zone) {
		return nil, apiErr(400, "InvalidZone.NotFound", "The zone '%s' does not exist.", zone)
	}
	typ := c.p.get("VolumeType")
	if typ == "" {
		typ = "gp2"
	}
	size, err := c.p.integer("Size", 0)
	if err != nil {
		return nil, err
	}
	iops, err := c.p.integer("Iops", 0)
	if err != nil {
		return nil, err
	}
	tput, err := c.p.integer("Throughput", 0)
	if err != nil {
		return nil, err
	}
	snapID := c.p.get("SnapshotId")
	if size == 0 && snapID == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter size or snapshotId")
	}
	tags, err := c.p.tagSpecs("volume")
	if err != nil {
		return nil, err
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	e := c.s.ebs()
	var src *snapshot
	if snapID != "" {
		if src, err = c.lookupSnapshot(snapID); err != nil {
			return nil, err
		}
		if src.state != "completed" {
			return nil, apiErr(400, "IncorrectState", "Snapshot '%s' is not 'completed'.", snapID)
		}
		if size == 0 {
			size = src.size
		}
		if size < src.size {
			return nil, apiErr(400, "InvalidParameterValue", "Volume of %dGiB is smaller than snapshot '%s', expect size >= %dGiB", size, snapID, src.size)
		}
	}
	if typ == "gp3" && iops == 0 {
		iops = 3000
	}
	if typ == "gp3" && tput == 0 {
		tput = 125
	}
	if err := checkVolumeSpec(typ, size, iops, tput); err != nil {
		return nil, err
	}
	if typ == "gp2" {
		iops = min(max(100, 3*size), 16000)
	}
	if err := c.stillWanted(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return nil, fmt.Errorf("ec2sim: creating EBS dir: %w", err)
	}
	v := &volume{id: newID("vol"), region: c.region, zone: zone, volType: typ, snapshotID: snapID, size: size,
		iops: iops, throughput: tput, state: "creating", created: time.Now().UTC(), seq: st.next()}
	v.path = filepath.Join(e.dir, v.id+".img")
	if src != nil {
		err = copySparse(src.path, v.path, size)
	} else {
		err = sparseFile(v.path, size)
	}
	if err != nil {
		return nil, fmt.Errorf("ec2sim: backing file for %s: %w", v.id, err)
	}
	e.volumes[v.id] = v
	st.setTags(v.id, tags)
	c.s.later(func() {
		if v.state == "creating" {
			v.state = "available"
		}
	})
	return &struct {
		ResponseMeta
		volumeXML
	}{volumeXML: st.volumeXML(v)}, nil
}

func describeVolumes(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ids := c.p.list("VolumeId")
	for _, id := range ids {
		if _, err := c.lookupVolume(id); err != nil {
			return nil, err
		}
	}
	attachField := func(f func(a *attachment) string) fieldFunc[*volume] {
		return func(v *volume) []string {
			if v.attach == nil {
				return nil
			}
			return one(f(v.attach))
		}
	}
	fields := map[string]fieldFunc[*volume]{
		"volume-id":                        func(v *volume) []string { return []string{v.id} },
		"status":                           func(v *volume) []string { return []string{v.state} },
		"availability-zone":                func(v *volume) []string { return []string{v.zone} },
		"size":                             func(v *volume) []string { return []string{strconv.Itoa(v.size)} },
		"snapshot-id":                      func(v *volume) []string { return one(v.snapshotID) },
		"volume-type":                      func(v *volume) []string { return []string{v.volType} },
		"encrypted":                        func(v *volume) []string { return []string{"false"} },
		"attachment.instance-id":           attachField(func(a *attachment) string { return a.instanceID }),
		"attachment.device":                attachField(func(a *attachment) string { return a.device }),
		"attachment.status":                attachField(func(a *attachment) string { return a.state }),
		"attachment.delete-on-termination": attachField(func(a *attachment) string { return boolStr(a.deleteOnTermination) }),
	}
	var all []volumeXML
	for _, v := range c.s.regionVolumes(c.region) {
		if len(ids) > 0 && !contains(ids, v.id) {
			continue
		}
		ok, err := matchFilters(v, c.p.filters(), fields, st.tagsOf(v.id))
		if err != nil {
			return nil, err
		}
		if ok {
			all = append(all, st.volumeXML(v))
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	return &struct {
		ResponseMeta
		Volumes   []volumeXML `xml:"volumeSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}{Volumes: all[start:end], NextToken: next}, nil
}

// regionVolumes lists a region's volumes in creation order. Caller holds mu.
func (s *Server) regionVolumes(region string) []*volume {
	var out []*volume
	for _, v := range s.ebs().volumes {
		if v.region == region {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out
}

func attachVolume(c *call) (metaSetter, error) {
	dev, instID := c.p.get("Device"), c.p.get("InstanceId")
	if dev == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter device")
	}
	if instID == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter InstanceId")
	}
	if !deviceRe.MatchString(dev) {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter device is invalid. %s is not a valid EBS device name.", dev, dev)
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	v, err := c.lookupVolume(c.p.get("VolumeId"))
	if err != nil {
		return nil, err
	}
	in, ok := st.instances[instID]
	if !ok || in.region != c.region || in.state == stateTerminated {
		return nil, apiErr(400, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", instID)
	}
	if v.attach != nil || v.state == "in-use" {
		return nil, apiErr(400, "VolumeInUse", "%s is already attached to an instance", v.id)
	}
	if v.state != "available" {
		return nil, apiErr(400, "IncorrectState", "The volume '%s' is not 'available'. Current state is '%s'.", v.id, v.state)
	}
	if in.state != stateRunning && in.state != stateStopped {
		return nil, apiErr(400, "IncorrectState", "Instance '%s' is not 'running' or 'stopped'.", instID)
	}
	if in.zone != v.zone {
		return nil, apiErr(400, "InvalidVolume.ZoneMismatch", "The volume '%s' is not in the same availability zone as instance '%s'", v.id, instID)
	}
	if in.rootDeviceName == dev {
		return nil, apiErr(400, "InvalidParameterValue", "Invalid value '%s' for unixDevice. Attachment point %s is already in use", dev, dev)
	}
	for _, o := range c.s.ebs().volumes {
		if o.attach != nil && o.attach.instanceID == instID && o.attach.device == dev {
			return nil, apiErr(400, "InvalidParameterValue", "Invalid value '%s' for unixDevice. Attachment point %s is already in use", dev, dev)
		}
	}
	a := &attachment{instanceID: instID, device: dev, state: "attaching", at: time.Now().UTC()}
	v.attach, v.state = a, "in-use"
	attached := func() {
		if v.attach == a && a.state == "attaching" {
			a.state = "attached"
		}
	}
	// A running instance whose machine hot-plugs gets the disk now; otherwise the
	// attachment is recorded and the volume is part of the instance's next start.
	if !c.s.hotplug(in, v, a, true, attached) {
		c.s.later(attached)
	}
	return &struct {
		ResponseMeta
		attachmentXML
	}{attachmentXML: a.xml(v.id)}, nil
}

func detachVolume(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	v, err := c.lookupVolume(c.p.get("VolumeId"))
	if err != nil {
		return nil, err
	}
	a := v.attach
	if a == nil {
		return nil, apiErr(400, "IncorrectState", "Volume '%s' is in the 'available' state.", v.id)
	}
	if id := c.p.get("InstanceId"); id != "" && id != a.instanceID {
		return nil, apiErr(400, "InvalidAttachment.NotFound", "Volume '%s' is not attached to instance '%s'", v.id, id)
	}
	if d := c.p.get("Device"); d != "" && d != a.device {
		return nil, apiErr(400, "InvalidAttachment.NotFound", "Volume '%s' is not attached at '%s'", v.id, d)
	}
	force, _, err := c.p.boolean("Force")
	if err != nil {
		return nil, err
	}
	if a.state == "detaching" && !force {
		return nil, apiErr(400, "IncorrectState", "Volume '%s' is already detaching", v.id)
	}
	in := st.instances[a.instanceID]
	if in != nil && in.rootDeviceType == "ebs" && sameDevice(a.device, in.rootDeviceName) && in.state != stateStopped {
		return nil, apiErr(400, "OperationNotPermitted", "Unable to detach root volume '%s' from instance '%s': stop the instance first", v.id, in.id)
	}
	a.state = "detaching"
	out := a.xml(v.id)
	done := func() {
		if v.attach == a {
			v.attach, v.state = nil, "available"
		}
	}
	switch {
	case in != nil && c.s.hotplug(in, v, a, false, done):
		if force {
			done() // a forced detach does not wait for the guest
		}
	case force:
		done()
	default:
		c.s.later(done)
	}
	return &struct {
		ResponseMeta
		attachmentXML
	}{attachmentXML: out}, nil
}

func deleteVolume(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	v, err := c.lookupVolume(c.p.get("VolumeId"))
	if err != nil {
		return nil, err
	}
	if v.attach != nil || v.state == "in-use" {
		return nil, apiErr(400, "VolumeInUse", "Volume %s is currently attached to %s", v.id, v.attach.instanceID)
	}
	if v.state != "available" {
		return nil, apiErr(400, "IncorrectState", "The volume '%s' is '%s'; it can be deleted once available", v.id, v.state)
	}
	if err := os.Remove(v.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("ec2sim: removing %s's file: %w", v.id, err)
	}
	delete(c.s.ebs().volumes, v.id)
	delete(st.tags, v.id)
	return &struct {
		ResponseMeta
		Return bool `xml:"return"`
	}{Return: true}, nil
}
