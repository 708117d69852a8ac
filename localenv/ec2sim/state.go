package ec2sim

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// regions is what DescribeRegions answers: the commercial regions whose buckets and
// endpoints the plugin may name.
var regions = []string{
	"af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
	"ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
	"ap-southeast-4", "ca-central-1", "eu-central-1", "eu-central-2", "eu-north-1",
	"eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1",
	"me-central-1", "me-south-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
}

func knownRegion(r string) bool {
	i := sort.SearchStrings(regions, r)
	return i < len(regions) && regions[i] == r
}

func zonesOf(region string) []string {
	return []string{region + "a", region + "b", region + "c"}
}

// amazonOwnerID is the owner id the seeded ("amazon"-aliased) AMIs carry.
const amazonOwnerID = "137112412989"

// state is everything the simulator remembers, for every region.
type state struct {
	mu        sync.Mutex
	account   string
	images    map[string]*image    // by id
	instances map[string]*instance // by id
	keyPairs  map[string]*keyPair  // by region+"/"+name
	groups    map[string]*secGroup // by id
	tags      map[string]map[string]string
	vpcs      map[string]*vpc // by region
	order     int64           // creation counter, for stable listings
}

func newState(account string) *state {
	return &state{account: account, images: map[string]*image{}, instances: map[string]*instance{},
		keyPairs: map[string]*keyPair{}, groups: map[string]*secGroup{}, tags: map[string]map[string]string{},
		vpcs: map[string]*vpc{}}
}

func (st *state) next() int64 { st.order++; return st.order }

// vpc is a region's default VPC with one default subnet per zone and a default group.
type vpc struct {
	id, cidr, region string
	subnets          []*subnet
	defaultGroup     string
}

type subnet struct {
	id, vpcID, zone, cidr string
}

// defaultVPC returns (creating on first use) the region's default VPC. Caller holds mu.
func (st *state) defaultVPC(region string) *vpc {
	if v, ok := st.vpcs[region]; ok {
		return v
	}
	v := &vpc{id: newID("vpc"), cidr: "172.31.0.0/16", region: region}
	for i, z := range zonesOf(region) {
		v.subnets = append(v.subnets, &subnet{id: newID("subnet"), vpcID: v.id, zone: z, cidr: fmt.Sprintf("172.31.%d.0/20", i*16)})
	}
	g := &secGroup{id: newID("sg"), name: "default", description: "default VPC security group", vpcID: v.id, region: region, owner: st.account, seq: st.next()}
	g.egress = []ipPermission{{Protocol: "-1", Ranges: []string{"0.0.0.0/0"}}}
	st.groups[g.id] = g
	v.defaultGroup = g.id
	st.vpcs[region] = v
	return v
}

type blockDevice struct {
	DeviceName  string
	VirtualName string
	NoDevice    bool
	EBS         bool
	VolumeSize  int
	Ebs         *ebsSpec // the Ebs structure as given (ebs_register.go)
}

// image is an AMI. Root is what instances of it run from.
type image struct {
	id, name, description, location string
	region                          string
	owner, ownerAlias               string
	state                           string // pending | available | failed | deregistered
	stateReason                     string
	arch, virt                      string
	rootDeviceType, rootDeviceName  string
	kernelID, ramdiskID             string
	enaSupport                      bool
	sriov                           string
	bootMode                        string
	tpmSupport, uefiData            string
	imdsSupport                     string
	blockDevices                    []blockDevice
	productCodes                    []string
	public                          bool
	launchUsers                     map[string]bool
	created                         time.Time
	sourceImageID, sourceRegion     string
	deprecateAt                     time.Time
	deregProtection                 bool
	root                            RootSource
	seq                             int64
}

type keyPair struct {
	id, name, region, fingerprint, keyType, publicKey string
	created                                           time.Time
	seq                                               int64
}

type ipPermission struct {
	Protocol         string
	FromPort, ToPort int
	HasPorts         bool
	Ranges           []string
	Groups           []string
}

type secGroup struct {
	id, name, description, vpcID, region, owner string
	ingress, egress                             []ipPermission
	seq                                         int64
}

// instance states as EC2 codes them.
const (
	statePending      = 0
	stateRunning      = 16
	stateShuttingDown = 32
	stateTerminated   = 48
	stateStopping     = 64
	stateStopped      = 80
)

var stateNames = map[int]string{statePending: "pending", stateRunning: "running", stateShuttingDown: "shutting-down",
	stateTerminated: "terminated", stateStopping: "stopping", stateStopped: "stopped"}

type instance struct {
	id, imageID, instanceType, keyName, region string
	reservationID                              string
	subnetID, vpcID, zone                      string
	groups                                     []string
	launchTime                                 time.Time
	state                                      int
	stateReason, stateReasonMessage            string
	transitionReason                           string
	privateIP                                  string
	arch, virt                                 string
	rootDeviceType, rootDeviceName             string
	kernelID, ramdiskID                        string
	launchIndex                                int
	userData                                   string
	shutdownBehavior                           string
	disableAPITermination                      bool
	clientToken                                string
	run                                        Instance // nil until launched
	done                                       chan struct{}
	seq                                        int64
}

func (i *instance) stateName() string { return stateNames[i.state] }

// sortedImages etc. return a region's objects in creation order. Caller holds mu.
func (st *state) regionImages(region string) []*image {
	var out []*image
	for _, im := range st.images {
		if im.region == region && im.state != "deregistered" {
			out = append(out, im)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out
}

func (st *state) regionInstances(region string) []*instance {
	var out []*instance
	for _, in := range st.instances {
		if in.region == region {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out
}

func (st *state) regionGroups(region string) []*secGroup {
	st.defaultVPC(region)
	var out []*secGroup
	for _, g := range st.groups {
		if g.region == region {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out
}

func (st *state) regionKeyPairs(region string) []*keyPair {
	var out []*keyPair
	for _, k := range st.keyPairs {
		if k.region == region {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out
}

func (st *state) tagsOf(id string) []tag {
	m := st.tags[id]
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, tag{Key: k, Value: m[k]})
	}
	return out
}

func (st *state) setTags(id string, tags []tag) {
	if len(tags) == 0 {
		return
	}
	m := st.tags[id]
	if m == nil {
		m = map[string]string{}
		st.tags[id] = m
	}
	for _, t := range tags {
		m[t.Key] = t.Value
	}
}
