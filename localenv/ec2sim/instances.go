package ec2sim

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"time"
)

type instanceStateXML struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type groupIDXML struct {
	ID   string `xml:"groupId"`
	Name string `xml:"groupName"`
}

type placementXML struct {
	Zone    string `xml:"availabilityZone"`
	Tenancy string `xml:"tenancy"`
}

type monitoringXML struct {
	State string `xml:"state"`
}

type instanceXML struct {
	ID                 string           `xml:"instanceId"`
	ImageID            string           `xml:"imageId"`
	State              instanceStateXML `xml:"instanceState"`
	PrivateDNS         string           `xml:"privateDnsName"`
	DNS                string           `xml:"dnsName"`
	Reason             string           `xml:"reason"`
	KeyName            string           `xml:"keyName,omitempty"`
	LaunchIndex        int              `xml:"amiLaunchIndex"`
	Type               string           `xml:"instanceType"`
	LaunchTime         string           `xml:"launchTime"`
	Placement          placementXML     `xml:"placement"`
	KernelID           string           `xml:"kernelId,omitempty"`
	RamdiskID          string           `xml:"ramdiskId,omitempty"`
	Monitoring         monitoringXML    `xml:"monitoring"`
	SubnetID           string           `xml:"subnetId,omitempty"`
	VpcID              string           `xml:"vpcId,omitempty"`
	PrivateIP          string           `xml:"privateIpAddress,omitempty"`
	PublicIP           string           `xml:"ipAddress,omitempty"`
	SourceDestCheck    bool             `xml:"sourceDestCheck"`
	Groups             []groupIDXML     `xml:"groupSet>item"`
	StateReason        *stateReasonXML  `xml:"stateReason,omitempty"`
	Architecture       string           `xml:"architecture"`
	RootDeviceType     string           `xml:"rootDeviceType"`
	RootDeviceName     string           `xml:"rootDeviceName,omitempty"`
	VirtualizationType string           `xml:"virtualizationType"`
	ClientToken        string           `xml:"clientToken,omitempty"`
	Tags               []tag            `xml:"tagSet>item"`
	Hypervisor         string           `xml:"hypervisor"`
	EbsOptimized       bool             `xml:"ebsOptimized"`
	EnaSupport         bool             `xml:"enaSupport"`
	PlatformDetails    string           `xml:"platformDetails"`
	UsageOperation     string           `xml:"usageOperation"`
	BlockDevices       []instanceBDMXML `xml:"blockDeviceMapping>item"`
}

func (c *call) instanceXML(in *instance) instanceXML {
	st := c.s.st
	x := instanceXML{ID: in.id, ImageID: in.imageID, State: instanceStateXML{in.state, in.stateName()},
		Reason: in.transitionReason, KeyName: in.keyName, LaunchIndex: in.launchIndex, Type: in.instanceType,
		LaunchTime: in.launchTime.UTC().Format("2006-01-02T15:04:05.000Z"), Placement: placementXML{in.zone, "default"},
		KernelID: in.kernelID, RamdiskID: in.ramdiskID, Monitoring: monitoringXML{"disabled"}, SubnetID: in.subnetID,
		VpcID: in.vpcID, SourceDestCheck: true, Architecture: in.arch, RootDeviceType: in.rootDeviceType,
		RootDeviceName: in.rootDeviceName, VirtualizationType: in.virt, ClientToken: in.clientToken,
		Tags: st.tagsOf(in.id), Hypervisor: "xen", PlatformDetails: "Linux/UNIX", UsageOperation: "RunInstances"}
	if in.state != stateTerminated && in.privateIP != "" {
		// The instance is reachable only at its private address: there is no public IP,
		// and the "public" fields carry the same address so SSH-by-public-IP works.
		x.PrivateIP, x.PublicIP = in.privateIP, in.privateIP
		x.PrivateDNS = "ip-" + strings.ReplaceAll(in.privateIP, ".", "-") + ".ec2.internal"
		x.DNS = ""
	}
	for _, g := range in.groups {
		name := ""
		if sg, ok := st.groups[g]; ok {
			name = sg.name
		}
		x.Groups = append(x.Groups, groupIDXML{g, name})
	}
	if in.stateReason != "" {
		x.StateReason = &stateReasonXML{in.stateReason, in.stateReasonMessage}
	}
	x.BlockDevices = c.s.instanceBDM(in)
	x.EnaSupport = c.s.enaOf(in)
	return x
}

var instanceIDPattern = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)

// findInstances resolves ids in the region; any unknown id fails the call. Caller holds mu.
func (c *call) findInstances(ids []string) ([]*instance, error) {
	var out []*instance
	var missing []string
	for _, id := range ids {
		if !instanceIDPattern.MatchString(id) {
			return nil, apiErr(400, "InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
		}
		in, ok := c.s.st.instances[id]
		if !ok || in.region != c.region {
			missing = append(missing, id)
			continue
		}
		out = append(out, in)
	}
	if len(missing) == 1 {
		return nil, apiErr(400, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", missing[0])
	}
	if len(missing) > 1 {
		return nil, apiErr(400, "InvalidInstanceID.NotFound", "The instance IDs '%s' do not exist", strings.Join(missing, ", "))
	}
	return out, nil
}

func runInstances(c *call) (metaSetter, error) {
	imageID, itype := c.p.get("ImageId"), c.p.get("InstanceType")
	if imageID == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter ImageId")
	}
	if itype == "" {
		itype = "m1.small" // EC2's historical default
	}
	minCount, err := c.p.integer("MinCount", 0)
	if err != nil {
		return nil, err
	}
	maxCount, err := c.p.integer("MaxCount", 0)
	if err != nil {
		return nil, err
	}
	if minCount < 1 || maxCount < minCount {
		return nil, apiErr(400, "InvalidParameterValue", "MinCount (%d) must be at least 1 and at most MaxCount (%d)", minCount, maxCount)
	}
	if maxCount > 5 {
		maxCount = 5
	}
	if minCount > maxCount {
		return nil, apiErr(400, "InstanceLimitExceeded", "You have requested more instances (%d) than your current instance limit of 5 allows", minCount)
	}
	info, ok := lookupInstanceType(itype)
	if !ok {
		return nil, apiErr(400, "InvalidParameterValue", "Invalid value '%s' for InstanceType.", itype)
	}
	userData := c.p.get("UserData")
	var udBytes []byte
	if userData != "" {
		udBytes, err = base64.StdEncoding.DecodeString(userData)
		if err != nil {
			return nil, apiErr(400, "InvalidParameterValue", "Invalid BASE64 encoding of user data.")
		}
	}
	reqBDMs, err := c.parseBlockDevices()
	if err != nil {
		return nil, err
	}
	volTags, err := c.p.tagSpecs("volume")
	if err != nil {
		return nil, err
	}
	shutdown := c.p.get("InstanceInitiatedShutdownBehavior")
	if shutdown == "" {
		shutdown = "stop"
	}
	disableTerm, _, err := c.p.boolean("DisableApiTermination")
	if err != nil {
		return nil, err
	}
	tags, err := c.p.tagSpecs("instance")
	if err != nil {
		return nil, err
	}
	mdOpts, err := metadataOptions(c.p.sub("MetadataOptions"))
	if err != nil {
		return nil, err
	}

	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.findImage(imageID)
	if err != nil {
		return nil, err
	}
	if im.state != "available" {
		return nil, apiErr(400, "InvalidAMIID.Unavailable", "The image id '[%s]' is not available (%s)", im.id, im.state)
	}
	if im.rootDeviceType == "instance-store" && !info.instanceStoreRoot {
		return nil, apiErr(400, "Unsupported", "The requested instance type's root device type 'instance-store' is not supported: instance store-backed AMIs run only on previous-generation types (c1, c3, d2, i2, m1, m2, m3, r3, x1), not %s", itype)
	}
	if im.virt == "hvm" && !info.hvm {
		return nil, apiErr(400, "InvalidParameterCombination", "Non-Windows instances with a virtualization type of 'hvm' are currently not supported for this instance type (%s).", itype)
	}
	if im.virt == "paravirtual" && !info.pv {
		return nil, apiErr(400, "InvalidParameterCombination", "Virtualization type 'paravirtual' is required for this instance type: %s is HVM only and the AMI is paravirtual.", itype)
	}
	if !contains(info.archs, im.arch) {
		return nil, apiErr(400, "InvalidParameterValue", "The architecture '%s' of the specified instance type does not match the architecture '%s' of the specified AMI.", strings.Join(info.archs, ","), im.arch)
	}
	if info.enaRequired && !im.enaSupport {
		return nil, apiErr(400, "InvalidParameterCombination", "Enhanced networking with the Elastic Network Adapter (ENA) is required for the '%s' instance type. Ensure that you are using an AMI that is enabled for ENA.", itype)
	}
	if im.bootMode == "uefi" && !info.nvme {
		return nil, apiErr(400, "Unsupported", "The instance type %s does not support the boot mode 'uefi' of %s: UEFI needs a Nitro type", itype, im.id)
	}
	plan, store, err := c.planVolumes(im, reqBDMs)
	if err != nil {
		return nil, err
	}
	var kp *keyPair
	if kn := c.p.get("KeyName"); kn != "" {
		kp = st.keyPairs[c.region+"/"+kn]
		if kp == nil {
			return nil, apiErr(400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist", kn)
		}
	}
	v := st.defaultVPC(c.region)
	sn := v.subnets[0]
	// With associate_public_ip_address the amazon plugin passes the subnet and groups
	// in NetworkInterface.1 instead.
	nic := c.p.sub("NetworkInterface.1")
	subnetID := c.p.get("SubnetId")
	if subnetID == "" {
		subnetID = nic.get("SubnetId")
	}
	if id := subnetID; id != "" {
		if sn = st.subnetByID(c.region, id); sn == nil {
			return nil, apiErr(400, "InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
		}
	}
	if z := c.p.sub("Placement").get("AvailabilityZone"); z != "" {
		if !contains(zonesOf(c.region), z) {
			return nil, apiErr(400, "InvalidParameterValue", "Invalid availability zone: [%s]", z)
		}
		if subnetID != "" && z != sn.zone {
			return nil, apiErr(400, "InvalidParameterCombination", "The specified subnet %s is in %s, not %s", sn.id, sn.zone, z)
		}
		for _, cand := range v.subnets {
			if cand.zone == z && subnetID == "" {
				sn = cand
			}
		}
	}
	var groups []string
	for _, id := range append(c.p.list("SecurityGroupId"), nic.list("SecurityGroupId")...) {
		g, err := c.findGroup(id, "")
		if err != nil {
			return nil, err
		}
		groups = append(groups, g.id)
	}
	for _, n := range c.p.list("SecurityGroup") {
		g, err := c.findGroup("", n)
		if err != nil {
			return nil, err
		}
		groups = append(groups, g.id)
	}
	if len(groups) == 0 {
		groups = []string{v.defaultGroup}
	}
	if c.s.cfg.Launcher == nil {
		return nil, apiErr(400, "Unsupported", "this simulator was started without an instance launcher: RunInstances needs one")
	}
	token := c.p.get("ClientToken")
	resID := newID("r")
	resp := &struct {
		ResponseMeta
		ReservationID string        `xml:"reservationId"`
		Owner         string        `xml:"ownerId"`
		Groups        []groupIDXML  `xml:"groupSet>item"`
		Instances     []instanceXML `xml:"instancesSet>item"`
	}{ReservationID: resID, Owner: st.account}
	if token != "" {
		// Idempotency: the same client token answers the same reservation.
		for _, in := range st.regionInstances(c.region) {
			if in.clientToken == token {
				resp.ReservationID = in.reservationID
				resp.Instances = append(resp.Instances, c.instanceXML(in))
			}
		}
		if len(resp.Instances) > 0 {
			return resp, nil
		}
	}
	now := time.Now().UTC()
	for i := 0; i < maxCount; i++ {
		in := &instance{id: newID("i"), imageID: im.id, instanceType: itype, region: c.region, reservationID: resID,
			subnetID: sn.id, vpcID: v.id, zone: sn.zone, groups: groups, launchTime: now, state: statePending,
			arch: im.arch, virt: im.virt, rootDeviceType: im.rootDeviceType, rootDeviceName: im.rootDeviceName,
			kernelID: im.kernelID, ramdiskID: im.ramdiskID, launchIndex: i, userData: userData,
			shutdownBehavior: shutdown, disableAPITermination: disableTerm, clientToken: token,
			done: make(chan struct{}), seq: st.next()}
		if kp != nil {
			in.keyName = kp.name
		}
		st.instances[in.id] = in
		st.setTags(in.id, tags)
		c.s.ebs().insts[in.id] = &instEBS{}
		if err := c.s.makeInstanceVolumes(in, plan, volTags); err != nil {
			delete(st.instances, in.id)
			delete(st.tags, in.id)
			delete(c.s.ebs().insts, in.id)
			return nil, err
		}
		if err := c.s.makeInstanceStore(in); err != nil {
			c.s.releaseVolumes(in)
			delete(st.instances, in.id)
			delete(st.tags, in.id)
			return nil, err
		}
		spec := LaunchSpec{InstanceID: in.id, Root: im.root, LoginUsers: []string{"root", "admin"}, UserData: udBytes,
			ImageID: im.id, InstanceType: itype, Region: c.region, Zone: sn.zone, Virtualization: im.virt,
			KernelID: im.kernelID, RamdiskID: im.ramdiskID, RootDeviceName: im.rootDeviceName, Metadata: mdOpts}
		for _, b := range store {
			spec.BlockDevices = append(spec.BlockDevices, DeviceMapping{DeviceName: b.DeviceName, VirtualName: b.VirtualName})
		}
		if kp != nil {
			spec.AuthorizedKey = kp.publicKey
			spec.KeyName = kp.name
		}
		c.s.ebs().insts[in.id].spec = spec
		spec.Volumes = c.s.instanceVolumes(in)
		c.s.wg.Add(1)
		go c.s.launch(in, spec, false)
		resp.Instances = append(resp.Instances, c.instanceXML(in))
	}
	for _, g := range groups {
		resp.Groups = append(resp.Groups, groupIDXML{g, st.groups[g].name})
	}
	return resp, nil
}

// launch starts one instance and moves it pending -> running, or to terminated with
// the reason when it cannot start (back to stopped when a StartInstances could not
// restart it).
func (s *Server) launch(in *instance, spec LaunchSpec, restart bool) {
	defer s.wg.Done()
	timeout := s.cfg.LaunchTimeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	start := time.Now()
	run, err := s.cfg.Launcher.Launch(ctx, spec)
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		s.cfg.Logf("ec2sim: %s failed to launch: %v", in.id, err)
		in.stateReason, in.stateReasonMessage = "Server.InternalError", "Server.InternalError: Internal error on launch: "+err.Error()
		in.transitionReason = "Server.InternalError"
		if restart && in.state == statePending {
			in.state = stateStopped
			s.dropInstanceStore(in)
			return
		}
		s.finishTerminate(in)
		return
	}
	in.run = run
	in.privateIP = run.PrivateIP()
	if in.state != statePending {
		// Terminated while it was starting: beginTerminate's goroutine picks run up.
		return
	}
	in.state = stateRunning
	if ie := s.ebs().insts[in.id]; ie != nil {
		ie.ranOnce = true
	}
	s.cfg.Logf("ec2sim: %s running at %s (ssh up after %s)", in.id, in.privateIP, time.Since(start).Round(time.Millisecond))
}

func describeInstances(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ids := c.p.list("InstanceId")
	var picked []*instance
	var err error
	if len(ids) > 0 {
		if picked, err = c.findInstances(ids); err != nil {
			return nil, err
		}
	} else {
		picked = st.regionInstances(c.region)
	}
	fields := instanceFields()
	bdmField := func(f func(b instanceBDMXML) string) fieldFunc[*instance] {
		return func(in *instance) []string {
			var out []string
			for _, b := range c.s.instanceBDM(in) {
				out = append(out, f(b))
			}
			return out
		}
	}
	fields["block-device-mapping.volume-id"] = bdmField(func(b instanceBDMXML) string { return b.Ebs.VolumeID })
	fields["block-device-mapping.device-name"] = bdmField(func(b instanceBDMXML) string { return b.DeviceName })
	fields["block-device-mapping.status"] = bdmField(func(b instanceBDMXML) string { return b.Ebs.Status })
	fields["block-device-mapping.delete-on-termination"] = bdmField(func(b instanceBDMXML) string { return boolStr(b.Ebs.DeleteOnTermination) })
	var all []*instance
	for _, in := range picked {
		ok, err := matchFilters(in, c.p.filters(), fields, st.tagsOf(in.id))
		if err != nil {
			return nil, err
		}
		if ok {
			all = append(all, in)
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	type reservationXML struct {
		ID        string        `xml:"reservationId"`
		Owner     string        `xml:"ownerId"`
		Groups    []groupIDXML  `xml:"groupSet>item"`
		Instances []instanceXML `xml:"instancesSet>item"`
	}
	resp := &struct {
		ResponseMeta
		Reservations []reservationXML `xml:"reservationSet>item"`
		NextToken    string           `xml:"nextToken,omitempty"`
	}{NextToken: next}
	idx := map[string]int{}
	for _, in := range all[start:end] {
		i, ok := idx[in.reservationID]
		if !ok {
			i = len(resp.Reservations)
			idx[in.reservationID] = i
			resp.Reservations = append(resp.Reservations, reservationXML{ID: in.reservationID, Owner: st.account})
		}
		resp.Reservations[i].Instances = append(resp.Reservations[i].Instances, c.instanceXML(in))
	}
	return resp, nil
}

func instanceFields() map[string]fieldFunc[*instance] {
	return map[string]fieldFunc[*instance]{
		"instance-id":         func(in *instance) []string { return []string{in.id} },
		"image-id":            func(in *instance) []string { return []string{in.imageID} },
		"instance-type":       func(in *instance) []string { return []string{in.instanceType} },
		"instance-state-name": func(in *instance) []string { return []string{in.stateName()} },
		"instance-state-code": func(in *instance) []string { return []string{fmt.Sprint(in.state)} },
		"key-name":            func(in *instance) []string { return one(in.keyName) },
		"subnet-id":           func(in *instance) []string { return []string{in.subnetID} },
		"vpc-id":              func(in *instance) []string { return []string{in.vpcID} },
		"availability-zone":   func(in *instance) []string { return []string{in.zone} },
		"private-ip-address":  func(in *instance) []string { return one(in.privateIP) },
		"reservation-id":      func(in *instance) []string { return []string{in.reservationID} },
		"architecture":        func(in *instance) []string { return []string{in.arch} },
		"root-device-type":    func(in *instance) []string { return []string{in.rootDeviceType} },
		"virtualization-type": func(in *instance) []string { return []string{in.virt} },
		"client-token":        func(in *instance) []string { return one(in.clientToken) },
		"instance.group-id":   func(in *instance) []string { return in.groups },
	}
}

func describeInstanceStatus(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ids := c.p.list("InstanceId")
	includeAll, _, err := c.p.boolean("IncludeAllInstances")
	if err != nil {
		return nil, err
	}
	var picked []*instance
	if len(ids) > 0 {
		if picked, err = c.findInstances(ids); err != nil {
			return nil, err
		}
	} else {
		picked = st.regionInstances(c.region)
	}
	type detail struct {
		Name   string `xml:"name"`
		Status string `xml:"status"`
	}
	type summary struct {
		Status  string   `xml:"status"`
		Details []detail `xml:"details>item"`
	}
	type statusXML struct {
		ID             string           `xml:"instanceId"`
		Zone           string           `xml:"availabilityZone"`
		State          instanceStateXML `xml:"instanceState"`
		SystemStatus   summary          `xml:"systemStatus"`
		InstanceStatus summary          `xml:"instanceStatus"`
	}
	statusOf := func(in *instance) string {
		switch in.state {
		case stateRunning:
			return "ok"
		case statePending:
			return "initializing"
		}
		return "not-applicable"
	}
	fields := map[string]fieldFunc[*instance]{
		"instance-state-name":    func(in *instance) []string { return []string{in.stateName()} },
		"instance-state-code":    func(in *instance) []string { return []string{fmt.Sprint(in.state)} },
		"availability-zone":      func(in *instance) []string { return []string{in.zone} },
		"instance-status.status": func(in *instance) []string { return []string{statusOf(in)} },
		"system-status.status":   func(in *instance) []string { return []string{statusOf(in)} },
		"instance-status.reachability": func(in *instance) []string {
			return []string{map[bool]string{true: "passed", false: "initializing"}[in.state == stateRunning]}
		},
		"system-status.reachability": func(in *instance) []string {
			return []string{map[bool]string{true: "passed", false: "initializing"}[in.state == stateRunning]}
		},
	}
	var all []*instance
	for _, in := range picked {
		if !includeAll && in.state != stateRunning {
			continue
		}
		ok, err := matchFilters(in, c.p.filters(), fields, nil)
		if err != nil {
			return nil, err
		}
		if ok {
			all = append(all, in)
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	resp := &struct {
		ResponseMeta
		Statuses  []statusXML `xml:"instanceStatusSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, in := range all[start:end] {
		s := statusOf(in)
		reach := "passed"
		if s != "ok" {
			reach = s
		}
		sum := summary{s, []detail{{"reachability", reach}}}
		resp.Statuses = append(resp.Statuses, statusXML{in.id, in.zone, instanceStateXML{in.state, in.stateName()}, sum, sum})
	}
	return resp, nil
}

type stateChangeXML struct {
	ID       string           `xml:"instanceId"`
	Current  instanceStateXML `xml:"currentState"`
	Previous instanceStateXML `xml:"previousState"`
}

func terminateInstances(c *call) (metaSetter, error) {
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
		if in.disableAPITermination && in.state != stateTerminated {
			return nil, apiErr(400, "OperationNotPermitted", "The instance '%s' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.", in.id)
		}
	}
	resp := &struct {
		ResponseMeta
		Changes []stateChangeXML `xml:"instancesSet>item"`
	}{}
	for _, in := range ins {
		prev := instanceStateXML{in.state, in.stateName()}
		c.s.beginTerminate(in, "User initiated ("+time.Now().UTC().Format("2006-01-02 15:04:05 MST")+")")
		resp.Changes = append(resp.Changes, stateChangeXML{in.id, instanceStateXML{in.state, in.stateName()}, prev})
	}
	return resp, nil
}

// beginTerminate moves an instance to shutting-down and tears it down in the
// background; it reaches terminated when sshd, namespace and mounts are gone. Caller
// holds mu.
func (s *Server) beginTerminate(in *instance, reason string) {
	prev := in.state
	switch prev {
	case stateTerminated, stateShuttingDown:
		return
	}
	in.state = stateShuttingDown
	in.transitionReason = reason
	in.stateReason, in.stateReasonMessage = "Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown"
	switch prev {
	case stateStopped:
		s.finishTerminate(in) // nothing runs
		return
	case stateStopping:
		return // beginStop's goroutine finishes the termination
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Wait for a launch still in flight to settle: it either failed (done closed)
		// or produced run.
		for {
			s.st.mu.Lock()
			run := in.run
			s.st.mu.Unlock()
			select {
			case <-in.done:
				return
			default:
			}
			if run != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				err := run.Terminate(ctx)
				cancel()
				s.st.mu.Lock()
				if err != nil {
					s.cfg.Logf("ec2sim: %s terminate: %v", in.id, err)
				}
				s.finishTerminate(in)
				s.st.mu.Unlock()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

// terminateAll tears down every instance and waits.
func (s *Server) terminateAll() error {
	s.st.mu.Lock()
	var waits []chan struct{}
	for _, in := range s.st.instances {
		if in.state != stateTerminated {
			s.beginTerminate(in, "Simulator shutdown")
			waits = append(waits, in.done)
		}
	}
	s.st.mu.Unlock()
	timeout := time.After(3 * time.Minute)
	for _, w := range waits {
		select {
		case <-w:
		case <-timeout:
			return fmt.Errorf("ec2sim: instances still shutting down after 3 minutes")
		}
	}
	return nil
}

func describeInstanceAttribute(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ins, err := c.findInstances([]string{c.p.get("InstanceId")})
	if err != nil {
		return nil, err
	}
	in := ins[0]
	type value struct {
		V string `xml:"value"`
	}
	type boolValue struct {
		V bool `xml:"value"`
	}
	resp := &struct {
		ResponseMeta
		InstanceID      string        `xml:"instanceId"`
		InstanceType    *value        `xml:"instanceType,omitempty"`
		Kernel          *value        `xml:"kernel,omitempty"`
		Ramdisk         *value        `xml:"ramdisk,omitempty"`
		UserData        *value        `xml:"userData,omitempty"`
		DisableTerm     *boolValue    `xml:"disableApiTermination,omitempty"`
		Shutdown        *value        `xml:"instanceInitiatedShutdownBehavior,omitempty"`
		RootDeviceName  *value        `xml:"rootDeviceName,omitempty"`
		Groups          *[]groupIDXML `xml:"groupSet>item,omitempty"`
		SourceDestCheck *boolValue    `xml:"sourceDestCheck,omitempty"`
		EnaSupport      *boolValue    `xml:"enaSupport,omitempty"`
		SriovNetSupport *value        `xml:"sriovNetSupport,omitempty"`
	}{InstanceID: in.id}
	switch a := c.p.get("Attribute"); a {
	case "instanceType":
		resp.InstanceType = &value{in.instanceType}
	case "kernel":
		resp.Kernel = &value{in.kernelID}
	case "ramdisk":
		resp.Ramdisk = &value{in.ramdiskID}
	case "userData":
		resp.UserData = &value{in.userData}
	case "disableApiTermination":
		resp.DisableTerm = &boolValue{in.disableAPITermination}
	case "instanceInitiatedShutdownBehavior":
		resp.Shutdown = &value{in.shutdownBehavior}
	case "rootDeviceName":
		resp.RootDeviceName = &value{in.rootDeviceName}
	case "groupSet":
		var g []groupIDXML
		for _, id := range in.groups {
			g = append(g, groupIDXML{id, st.groups[id].name})
		}
		resp.Groups = &g
	case "sourceDestCheck":
		resp.SourceDestCheck = &boolValue{true}
	case "enaSupport":
		resp.EnaSupport = &boolValue{c.s.enaOf(in)}
	case "sriovNetSupport":
		resp.SriovNetSupport = &value{c.s.sriovOf(in)}
	case "":
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter Attribute")
	default:
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter attribute is invalid. Unknown attribute.", a)
	}
	return resp, nil
}
