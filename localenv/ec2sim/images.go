package ec2sim

import (
	"os"
	"regexp"
	"strings"
	"time"
)

type stateReasonXML struct {
	Code    string `xml:"code"`
	Message string `xml:"message"`
}

type ebsXML struct {
	SnapshotID          string `xml:"snapshotId,omitempty"`
	VolumeSize          int    `xml:"volumeSize,omitempty"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	VolumeType          string `xml:"volumeType,omitempty"`
	Iops                int    `xml:"iops,omitempty"`
	Throughput          int    `xml:"throughput,omitempty"`
	Encrypted           bool   `xml:"encrypted"`
}

type bdmXML struct {
	DeviceName  string  `xml:"deviceName"`
	VirtualName string  `xml:"virtualName,omitempty"`
	Ebs         *ebsXML `xml:"ebs,omitempty"`
	NoDevice    *string `xml:"noDevice,omitempty"`
}

type imageXML struct {
	ID              string          `xml:"imageId"`
	Location        string          `xml:"imageLocation"`
	State           string          `xml:"imageState"`
	Owner           string          `xml:"imageOwnerId"`
	CreationDate    string          `xml:"creationDate"`
	Public          bool            `xml:"isPublic"`
	Architecture    string          `xml:"architecture"`
	ImageType       string          `xml:"imageType"`
	KernelID        string          `xml:"kernelId,omitempty"`
	RamdiskID       string          `xml:"ramdiskId,omitempty"`
	OwnerAlias      string          `xml:"imageOwnerAlias,omitempty"`
	Name            string          `xml:"name"`
	Description     string          `xml:"description,omitempty"`
	RootDeviceType  string          `xml:"rootDeviceType"`
	RootDeviceName  string          `xml:"rootDeviceName,omitempty"`
	BlockDevices    []bdmXML        `xml:"blockDeviceMapping>item"`
	Virtualization  string          `xml:"virtualizationType"`
	Tags            []tag           `xml:"tagSet>item"`
	Hypervisor      string          `xml:"hypervisor"`
	EnaSupport      bool            `xml:"enaSupport"`
	SriovNetSupport string          `xml:"sriovNetSupport,omitempty"`
	BootMode        string          `xml:"bootMode,omitempty"`
	TpmSupport      string          `xml:"tpmSupport,omitempty"`
	ImdsSupport     string          `xml:"imdsSupport,omitempty"`
	PlatformDetails string          `xml:"platformDetails"`
	UsageOperation  string          `xml:"usageOperation"`
	StateReason     *stateReasonXML `xml:"stateReason,omitempty"`
	SourceImageID   string          `xml:"sourceImageId,omitempty"`
	SourceRegion    string          `xml:"sourceImageRegion,omitempty"`
	DeprecationTime string          `xml:"deprecationTime,omitempty"`
	DeregProtection string          `xml:"deregistrationProtection,omitempty"`
}

func blockDevicesXML(bds []blockDevice) []bdmXML {
	var out []bdmXML
	for _, b := range bds {
		x := bdmXML{DeviceName: b.DeviceName, VirtualName: b.VirtualName}
		if b.NoDevice {
			empty := ""
			x.NoDevice = &empty
		}
		if b.EBS {
			x.Ebs = b.Ebs.xml()
		}
		out = append(out, x)
	}
	return out
}

func (c *call) imageXML(im *image) imageXML {
	x := imageXML{ID: im.id, Location: im.location, State: im.state, Owner: im.owner,
		CreationDate: im.created.UTC().Format("2006-01-02T15:04:05.000Z"), Public: im.public, Architecture: im.arch,
		ImageType: "machine", KernelID: im.kernelID, RamdiskID: im.ramdiskID, OwnerAlias: im.ownerAlias, Name: im.name,
		Description: im.description, RootDeviceType: im.rootDeviceType, RootDeviceName: im.rootDeviceName,
		BlockDevices: blockDevicesXML(im.blockDevices), Virtualization: im.virt, Tags: c.s.st.tagsOf(im.id),
		Hypervisor: "xen", EnaSupport: im.enaSupport, SriovNetSupport: im.sriov, BootMode: im.bootMode,
		TpmSupport: im.tpmSupport, ImdsSupport: im.imdsSupport,
		PlatformDetails: "Linux/UNIX", UsageOperation: "RunInstances", SourceImageID: im.sourceImageID, SourceRegion: im.sourceRegion}
	if !im.deprecateAt.IsZero() {
		x.DeprecationTime = im.deprecateAt.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	x.DeregProtection = "disabled"
	if im.deregProtection {
		x.DeregProtection = "enabled"
	}
	if im.stateReason != "" {
		x.StateReason = &stateReasonXML{Code: "Client.InvalidManifest", Message: im.stateReason}
	}
	return x
}

var amiIDPattern = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)

func checkAMIID(id string) error {
	if !amiIDPattern.MatchString(id) {
		return apiErr(400, "InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", id)
	}
	return nil
}

// visible reports whether the caller may see (and launch) the image.
func (st *state) visible(im *image) bool {
	return im.owner == st.account || im.public || im.launchUsers[st.account]
}

// findImage resolves an AMI id in the region. Caller holds mu.
func (c *call) findImage(id string) (*image, error) {
	if err := checkAMIID(id); err != nil {
		return nil, err
	}
	im, ok := c.s.st.images[id]
	if !ok || im.region != c.region || im.state == "deregistered" || !c.s.st.visible(im) {
		return nil, apiErr(400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
	}
	return im, nil
}

func describeImages(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ids := c.p.list("ImageId")
	owners := c.p.list("Owner")
	execBy := c.p.list("ExecutableBy")
	var picked []*image
	if len(ids) > 0 {
		var missing []string
		for _, id := range ids {
			if err := checkAMIID(id); err != nil {
				return nil, err
			}
			im, err := c.findImage(id)
			if err != nil {
				missing = append(missing, id)
				continue
			}
			picked = append(picked, im)
		}
		if len(missing) > 0 {
			return nil, apiErr(400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", strings.Join(missing, ", "))
		}
	} else {
		for _, im := range st.regionImages(c.region) {
			if st.visible(im) {
				picked = append(picked, im)
			}
		}
	}
	fields := map[string]fieldFunc[*image]{
		"image-id":            func(im *image) []string { return []string{im.id} },
		"name":                func(im *image) []string { return []string{im.name} },
		"description":         func(im *image) []string { return one(im.description) },
		"architecture":        func(im *image) []string { return []string{im.arch} },
		"root-device-type":    func(im *image) []string { return []string{im.rootDeviceType} },
		"root-device-name":    func(im *image) []string { return one(im.rootDeviceName) },
		"virtualization-type": func(im *image) []string { return []string{im.virt} },
		"state":               func(im *image) []string { return []string{im.state} },
		"owner-id":            func(im *image) []string { return []string{im.owner} },
		"owner-alias":         func(im *image) []string { return one(im.ownerAlias) },
		"is-public":           func(im *image) []string { return []string{boolStr(im.public)} },
		"image-type":          func(*image) []string { return []string{"machine"} },
		"hypervisor":          func(*image) []string { return []string{"xen"} },
		"manifest-location":   func(im *image) []string { return one(im.location) },
		"kernel-id":           func(im *image) []string { return one(im.kernelID) },
		"ramdisk-id":          func(im *image) []string { return one(im.ramdiskID) },
		"ena-support":         func(im *image) []string { return []string{boolStr(im.enaSupport)} },
		"sriov-net-support":   func(im *image) []string { return one(im.sriov) },
		"platform-details":    func(*image) []string { return []string{"Linux/UNIX"} },
		"boot-mode":           func(im *image) []string { return one(im.bootMode) },
		"creation-date":       func(im *image) []string { return []string{im.created.UTC().Format("2006-01-02T15:04:05.000Z")} },
		"block-device-mapping.device-name": func(im *image) []string {
			var out []string
			for _, b := range im.blockDevices {
				out = append(out, b.DeviceName)
			}
			return out
		},
	}
	var all []*image
	for _, im := range picked {
		if len(owners) > 0 && !ownerMatches(st, im, owners) {
			continue
		}
		if len(execBy) > 0 && !execMatches(st, im, execBy) {
			continue
		}
		ok, err := matchFilters(im, c.p.filters(), fields, st.tagsOf(im.id))
		if err != nil {
			return nil, err
		}
		if ok {
			all = append(all, im)
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	resp := &struct {
		ResponseMeta
		Images    []imageXML `xml:"imagesSet>item"`
		NextToken string     `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, im := range all[start:end] {
		resp.Images = append(resp.Images, c.imageXML(im))
	}
	return resp, nil
}

func ownerMatches(st *state, im *image, owners []string) bool {
	for _, o := range owners {
		switch o {
		case "self":
			if im.owner == st.account {
				return true
			}
		case "amazon", "aws-marketplace", "aws-backup-vault":
			if im.ownerAlias == o {
				return true
			}
		default:
			if im.owner == o {
				return true
			}
		}
	}
	return false
}

func execMatches(st *state, im *image, who []string) bool {
	for _, w := range who {
		switch w {
		case "all":
			if im.public {
				return true
			}
		case "self":
			if im.public || im.owner == st.account || im.launchUsers[st.account] {
				return true
			}
		default:
			if im.public || im.launchUsers[w] || im.owner == w {
				return true
			}
		}
	}
	return false
}

// amiNamePattern is EC2's rule for AMI names.
var amiNamePattern = regexp.MustCompile(`^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$`)

// deviceNamePattern is the Linux device names EC2 takes in block device mappings:
// sd[a-z] and hd[a-z] with an optional partition 1-15, xvd[a-z], and xvd[b-c][a-z].
var deviceNamePattern = regexp.MustCompile(`^(/dev/)?((sd|hd|xvd)[a-z]([1-9]|1[0-5])?|xvd[b-c][a-z])$`)

var virtualNamePattern = regexp.MustCompile(`^(ephemeral([0-9]|1[0-9]|2[0-3])|ami|root|swap)$`)

func validDeviceName(n string) bool { return deviceNamePattern.MatchString(n) }

// parseBlockDevices reads BlockDeviceMapping.N of RegisterImage/RunInstances.
func (c *call) parseBlockDevices() ([]blockDevice, error) {
	var out []blockDevice
	seen := map[string]bool{}
	for _, b := range c.p.structs("BlockDeviceMapping") {
		d := blockDevice{DeviceName: b.get("DeviceName"), VirtualName: b.get("VirtualName"), NoDevice: b.has("NoDevice")}
		if d.DeviceName == "" {
			return nil, apiErr(400, "MissingParameter", "The request must contain the parameter BlockDeviceMapping.N.DeviceName")
		}
		if !validDeviceName(d.DeviceName) {
			return nil, apiErr(400, "InvalidBlockDeviceMapping", "Invalid device name %s", d.DeviceName)
		}
		if seen[strings.TrimPrefix(d.DeviceName, "/dev/")] {
			return nil, apiErr(400, "InvalidBlockDeviceMapping", "The device '%s' is used in more than one block-device mapping", d.DeviceName)
		}
		seen[strings.TrimPrefix(d.DeviceName, "/dev/")] = true
		if d.VirtualName != "" && !strings.HasPrefix(d.VirtualName, "ephemeral") {
			return nil, apiErr(400, "InvalidBlockDeviceMapping", "Invalid virtual name %s: expecting ephemeral0..ephemeral23", d.VirtualName)
		}
		if d.VirtualName != "" && !virtualNamePattern.MatchString(d.VirtualName) {
			return nil, apiErr(400, "InvalidBlockDeviceMapping", "Invalid virtual name %s: expecting ephemeral0..ephemeral23", d.VirtualName)
		}
		eb := b.sub("Ebs")
		if eb.has("SnapshotId") || eb.has("VolumeSize") || eb.has("VolumeType") || eb.has("DeleteOnTermination") || eb.has("Encrypted") || eb.has("Iops") || eb.has("Throughput") {
			spec, err := parseEbsSpec(eb, d.DeviceName)
			if err != nil {
				return nil, err
			}
			d.EBS, d.VolumeSize, d.Ebs = true, spec.size, spec
		}
		if d.VirtualName != "" && d.EBS {
			return nil, apiErr(400, "InvalidBlockDeviceMapping", "Device %s cannot be both an instance store (%s) and an EBS volume", d.DeviceName, d.VirtualName)
		}
		out = append(out, d)
	}
	return out, nil
}

func deregisterImage(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.findImage(c.p.get("ImageId"))
	if err != nil {
		return nil, err
	}
	if im.owner != st.account {
		return nil, apiErr(400, "AuthFailure", "Not authorized for image:%s", im.id)
	}
	if im.deregProtection {
		return nil, apiErr(400, "InvalidParameterValue", "Image %s has deregistration protection enabled; disable it first (DisableImageDeregistrationProtection)", im.id)
	}
	im.state = "deregistered"
	delete(st.tags, im.id)
	c.s.dropImageFile(im)
	return &returnResp{Return: true}, nil
}

func describeImageAttribute(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.findImage(c.p.get("ImageId"))
	if err != nil {
		return nil, err
	}
	type value struct {
		V string `xml:"value"`
	}
	type perm struct {
		UserID string `xml:"userId,omitempty"`
		Group  string `xml:"group,omitempty"`
	}
	type productCode struct {
		Code string `xml:"productCode"`
		Type string `xml:"type"`
	}
	resp := &struct {
		ResponseMeta
		ImageID      string         `xml:"imageId"`
		LaunchPerms  *[]perm        `xml:"launchPermission>item,omitempty"`
		ProductCodes *[]productCode `xml:"productCodes>item,omitempty"`
		Description  *value         `xml:"description,omitempty"`
		Kernel       *value         `xml:"kernel,omitempty"`
		Ramdisk      *value         `xml:"ramdisk,omitempty"`
		BlockDevices *[]bdmXML      `xml:"blockDeviceMapping>item,omitempty"`
		Sriov        *value         `xml:"sriovNetSupport,omitempty"`
		BootMode     *value         `xml:"bootMode,omitempty"`
		TpmSupport   *value         `xml:"tpmSupport,omitempty"`
		UefiData     *value         `xml:"uefiData,omitempty"`
		ImdsSupport  *value         `xml:"imdsSupport,omitempty"`
	}{ImageID: im.id}
	if im.owner != st.account {
		return nil, apiErr(400, "AuthFailure", "Not authorized for image:%s", im.id)
	}
	switch c.p.get("Attribute") {
	case "launchPermission":
		var ps []perm
		if im.public {
			ps = append(ps, perm{Group: "all"})
		}
		users := make([]string, 0, len(im.launchUsers))
		for u := range im.launchUsers {
			users = append(users, u)
		}
		sortStrings(users)
		for _, u := range users {
			ps = append(ps, perm{UserID: u})
		}
		resp.LaunchPerms = &ps
	case "productCodes":
		var pcs []productCode
		for _, p := range im.productCodes {
			pcs = append(pcs, productCode{p, "marketplace"})
		}
		resp.ProductCodes = &pcs
	case "description":
		resp.Description = &value{im.description}
	case "kernel":
		resp.Kernel = &value{im.kernelID}
	case "ramdisk":
		resp.Ramdisk = &value{im.ramdiskID}
	case "blockDeviceMapping":
		b := blockDevicesXML(im.blockDevices)
		resp.BlockDevices = &b
	case "sriovNetSupport":
		resp.Sriov = &value{im.sriov}
	case "bootMode":
		resp.BootMode = &value{im.bootMode}
	case "tpmSupport":
		resp.TpmSupport = &value{im.tpmSupport}
	case "uefiData":
		resp.UefiData = &value{im.uefiData}
	case "imdsSupport":
		resp.ImdsSupport = &value{im.imdsSupport}
	case "":
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter Attribute")
	default:
		return nil, apiErr(400, "InvalidRequest", "Attribute %s is not supported by DescribeImageAttribute", c.p.get("Attribute"))
	}
	return resp, nil
}

func modifyImageAttribute(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.findImage(c.p.get("ImageId"))
	if err != nil {
		return nil, err
	}
	if im.owner != st.account {
		return nil, apiErr(400, "AuthFailure", "Not authorized for image:%s", im.id)
	}
	attr := c.p.get("Attribute")
	// ImdsSupport.Value=v2.0 needs no Attribute (the amazon plugin sends it alone);
	// once set, EC2 does not let it go back.
	if imds := c.p.sub("ImdsSupport"); imds.has("Value") || attr == "imdsSupport" {
		v := imds.get("Value")
		if !imds.has("Value") {
			v = c.p.get("Value")
		}
		if v != "v2.0" {
			return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter imdsSupport is invalid. Valid value: v2.0", v)
		}
		im.imdsSupport = v
		return &returnResp{Return: true}, nil
	}
	if desc := c.p.sub("Description"); desc.has("Value") {
		im.description = desc.get("Value")
		return &returnResp{Return: true}, nil
	}
	if attr == "description" {
		im.description = c.p.get("Value")
		return &returnResp{Return: true}, nil
	}
	addUsers, addGroups := c.p.list("UserId"), c.p.list("UserGroup")
	op := c.p.get("OperationType")
	lp := c.p.sub("LaunchPermission")
	var add, remove []params
	add, remove = lp.structs("Add"), lp.structs("Remove")
	if attr == "launchPermission" || len(addUsers)+len(addGroups) > 0 {
		switch op {
		case "add":
			for _, u := range addUsers {
				add = append(add, params{v: map[string][]string{"UserId": {u}}})
			}
			for _, g := range addGroups {
				add = append(add, params{v: map[string][]string{"Group": {g}}})
			}
		case "remove":
			for _, u := range addUsers {
				remove = append(remove, params{v: map[string][]string{"UserId": {u}}})
			}
			for _, g := range addGroups {
				remove = append(remove, params{v: map[string][]string{"Group": {g}}})
			}
		case "":
		default:
			return nil, apiErr(400, "InvalidParameterValue", "OperationType must be add or remove, not %q", op)
		}
	}
	if len(add)+len(remove) == 0 {
		if c.p.has("ProductCode.1") {
			im.productCodes = append(im.productCodes, c.p.list("ProductCode")...)
			return &returnResp{Return: true}, nil
		}
		return nil, apiErr(400, "MissingParameter", "ModifyImageAttribute needs a launch permission change, a description or product codes")
	}
	apply := func(ps []params, on bool) error {
		for _, p := range ps {
			if g := p.get("Group"); g != "" {
				if g != "all" {
					return apiErr(400, "InvalidParameterValue", "Invalid launch permission group %q: only 'all' exists", g)
				}
				im.public = on
			}
			if u := p.get("UserId"); u != "" {
				u = strings.ReplaceAll(u, "-", "")
				if len(u) != 12 || strings.Trim(u, "0123456789") != "" {
					return apiErr(400, "InvalidAMIAttributeItemValue", "Invalid attribute item value \"%s\" for userId item type.", p.get("UserId"))
				}
				if im.launchUsers == nil {
					im.launchUsers = map[string]bool{}
				}
				if on {
					im.launchUsers[u] = true
				} else {
					delete(im.launchUsers, u)
				}
			}
		}
		return nil
	}
	if err := apply(add, true); err != nil {
		return nil, err
	}
	if err := apply(remove, false); err != nil {
		return nil, err
	}
	return &returnResp{Return: true}, nil
}

func resetImageAttribute(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.findImage(c.p.get("ImageId"))
	if err != nil {
		return nil, err
	}
	if c.p.get("Attribute") != "launchPermission" {
		return nil, apiErr(400, "InvalidParameterValue", "Only launchPermission can be reset")
	}
	im.public, im.launchUsers = false, nil
	return &returnResp{Return: true}, nil
}

func copyImage(c *call) (metaSetter, error) {
	srcRegion, srcID, name := c.p.get("SourceRegion"), c.p.get("SourceImageId"), c.p.get("Name")
	if srcRegion == "" || srcID == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameters SourceRegion and SourceImageId")
	}
	if !knownRegion(srcRegion) {
		return nil, apiErr(400, "InvalidRequest", "Invalid source region: %s", srcRegion)
	}
	if name == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter Name")
	}
	if !amiNamePattern.MatchString(name) {
		return nil, apiErr(400, "InvalidAMIName.Malformed", "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/' and '_'")
	}
	if err := checkAMIID(srcID); err != nil {
		return nil, err
	}
	tags, err := c.p.tagSpecs("image")
	if err != nil {
		return nil, err
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	src, ok := st.images[srcID]
	if !ok || src.region != srcRegion || src.state == "deregistered" || !st.visible(src) {
		return nil, apiErr(400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", srcID)
	}
	if src.state != "available" {
		return nil, apiErr(400, "IncorrectState", "Image %s is not in a valid state to be copied (%s)", srcID, src.state)
	}
	if err := c.checkNameFree(name); err != nil {
		return nil, err
	}
	cp := *src
	cp.id, cp.name, cp.region, cp.owner, cp.ownerAlias = newID("ami"), name, c.region, st.account, ""
	cp.public, cp.launchUsers, cp.created, cp.seq = false, nil, time.Now().UTC(), st.next()
	cp.sourceImageID, cp.sourceRegion = srcID, srcRegion
	if c.p.has("Description") {
		cp.description = c.p.get("Description")
	}
	cp.state = "pending"
	st.images[cp.id] = &cp
	if v, _, _ := c.p.boolean("CopyImageTags"); v {
		st.setTags(cp.id, st.tagsOf(srcID))
	}
	st.setTags(cp.id, tags)
	if src.rootDeviceType == "ebs" {
		cp.location = st.account + "/" + name
		if err := c.copyEBSImage(src, &cp); err != nil {
			delete(st.images, cp.id)
			delete(st.tags, cp.id)
			return nil, err
		}
	} else if src.rootDeviceType == "instance-store" && src.location != "" && c.s.cfg.S3 != nil {
		// EC2 copies the bundle into a bucket of the destination region; the copy is
		// pending until that is done, and failed (with the reason) if it cannot be.
		c.s.wg.Add(1)
		go func(im *image, loc string) {
			defer c.s.wg.Done()
			newLoc, err := c.s.copyBundle(c.s.ctx, loc, im.region)
			st.mu.Lock()
			defer st.mu.Unlock()
			if err != nil {
				c.s.cfg.Logf("ec2sim: copying the bundle of %s for %s: %v", srcID, im.id, err)
				if im.state == "pending" {
					im.state, im.stateReason = "failed", "copying the bundle: "+err.Error()
				}
				return
			}
			im.location = newLoc
			c.s.becomeAvailable(im)
		}(&cp, src.location)
	} else {
		c.s.becomeAvailable(&cp)
	}
	return &struct {
		ResponseMeta
		ImageID string `xml:"imageId"`
	}{ImageID: cp.id}, nil
}

// checkNameFree enforces unique AMI names per owner and region. Caller holds mu.
func (c *call) checkNameFree(name string) error {
	for _, im := range c.s.st.regionImages(c.region) {
		if im.owner == c.s.st.account && im.name == name {
			return apiErr(400, "InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s", name, im.id)
		}
	}
	return nil
}

// dropImageFile removes a deregistered AMI's unbundled image from the data dir unless
// another AMI (a CopyImage) still uses it. Running instances have their own copies.
// Caller holds mu.
func (s *Server) dropImageFile(im *image) {
	if im.root.Image == "" || !strings.HasPrefix(im.root.Image, s.cfg.DataDir+string(os.PathSeparator)) {
		return // seeded roots belong to whoever seeded them
	}
	for _, other := range s.st.images {
		if other != im && other.state != "deregistered" && other.root.Image == im.root.Image {
			return
		}
	}
	if err := os.Remove(im.root.Image); err != nil && !os.IsNotExist(err) {
		s.cfg.Logf("ec2sim: removing the image of deregistered %s: %v", im.id, err)
	}
}
