package ec2sim

import "strings"

// instanceTypeInfo is what the simulator knows of an instance type: whether it can
// boot an instance-store root (only the previous-generation Xen families can) and
// which virtualization types and architectures it runs.
type instanceTypeInfo struct {
	instanceStoreRoot bool
	pv, hvm           bool
	archs             []string
	vcpus, memMiB     int
	// Current-generation facts (nitro.go): NVMe EBS devices, ENA required, and the
	// GiB of NVMe instance store of a "d" type.
	nvme, enaRequired bool
	storeGiB          int
}

// previous-generation families that boot instance-store roots (spec section 6), and
// the virtualization types each runs on Xen.
var prevGen = map[string]struct{ pv, hvm bool }{
	"c1": {true, false}, "m1": {true, false}, "m2": {true, false},
	"c3": {true, true}, "m3": {true, true},
	"d2": {false, true}, "i2": {false, true}, "r3": {false, true}, "x1": {false, true},
}

var prevGenSizes = map[string][]string{
	"c1": {"medium", "xlarge"},
	"m1": {"small", "medium", "large", "xlarge"},
	"m2": {"xlarge", "2xlarge", "4xlarge"},
	"c3": {"large", "xlarge", "2xlarge", "4xlarge", "8xlarge"},
	"m3": {"medium", "large", "xlarge", "2xlarge"},
	"d2": {"xlarge", "2xlarge", "4xlarge", "8xlarge"},
	"i2": {"xlarge", "2xlarge", "4xlarge", "8xlarge"},
	"r3": {"large", "xlarge", "2xlarge", "4xlarge", "8xlarge"},
	"x1": {"16xlarge", "32xlarge"},
}

// current-generation (Nitro) families a template may name: EBS roots only.
var nitroFamilies = []string{"t3", "t3a", "t4g", "m5", "m5a", "m5d", "m6i", "m6id", "m6g", "m7i", "m7g", "c5", "c5d", "c6i", "c6g", "c7i", "c7g", "r5", "r6i", "r7i", "i3", "i4i", "t2"}
var nitroSizes = []string{"nano", "micro", "small", "medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge"}

func lookupInstanceType(name string) (instanceTypeInfo, bool) {
	fam, size, ok := strings.Cut(name, ".")
	if !ok {
		return instanceTypeInfo{}, false
	}
	if v, ok := prevGen[fam]; ok {
		if !contains(prevGenSizes[fam], size) {
			return instanceTypeInfo{}, false
		}
		archs := []string{"x86_64"}
		if fam == "c1" || fam == "m1" || fam == "m3" || fam == "c3" {
			archs = []string{"i386", "x86_64"}
		}
		return instanceTypeInfo{instanceStoreRoot: true, pv: v.pv, hvm: v.hvm, archs: archs, vcpus: 2, memMiB: 3840}, true
	}
	if contains(nitroFamilies, fam) && contains(nitroSizes, size) {
		arch := "x86_64"
		if strings.HasSuffix(fam, "g") {
			arch = "arm64"
		}
		info := instanceTypeInfo{instanceStoreRoot: false, pv: false, hvm: true, archs: []string{arch}, vcpus: 2, memMiB: 4096}
		nitroInfo(fam, size, &info)
		return info, true
	}
	return instanceTypeInfo{}, false
}

func allInstanceTypes() []string {
	var out []string
	for fam, sizes := range prevGenSizes {
		for _, s := range sizes {
			out = append(out, fam+"."+s)
		}
	}
	for _, fam := range nitroFamilies {
		for _, s := range nitroSizes {
			out = append(out, fam+"."+s)
		}
	}
	sortStrings(out)
	return out
}

func describeInstanceTypeOfferings(c *call) (metaSetter, error) {
	type offering struct {
		Type     string `xml:"instanceType"`
		LocType  string `xml:"locationType"`
		Location string `xml:"location"`
	}
	lt := c.p.get("LocationType")
	if lt == "" {
		lt = "region"
	}
	var locs []string
	switch lt {
	case "region":
		locs = []string{c.region}
	case "availability-zone":
		locs = zonesOf(c.region)
	default:
		return nil, apiErr(400, "InvalidParameterValue", "LocationType %s is not supported here (region, availability-zone)", lt)
	}
	fields := map[string]fieldFunc[offering]{
		"instance-type": func(o offering) []string { return []string{o.Type} },
		"location":      func(o offering) []string { return []string{o.Location} },
	}
	var all []offering
	for _, t := range allInstanceTypes() {
		for _, l := range locs {
			o := offering{t, lt, l}
			ok, err := matchFilters(o, c.p.filters(), fields, nil)
			if err != nil {
				return nil, err
			}
			if ok {
				all = append(all, o)
			}
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	return &struct {
		ResponseMeta
		Offerings []offering `xml:"instanceTypeOfferingSet>item"`
		NextToken string     `xml:"nextToken,omitempty"`
	}{Offerings: all[start:end], NextToken: next}, nil
}

func describeInstanceTypes(c *call) (metaSetter, error) {
	type procInfo struct {
		Archs []string `xml:"supportedArchitectures>item"`
	}
	type vcpuInfo struct {
		N int `xml:"defaultVCpus"`
	}
	type memInfo struct {
		MiB int `xml:"sizeInMiB"`
	}
	type typeXML struct {
		Type       string   `xml:"instanceType"`
		Current    bool     `xml:"currentGeneration"`
		RootTypes  []string `xml:"supportedRootDeviceTypes>item"`
		Virt       []string `xml:"supportedVirtualizationTypes>item"`
		Hypervisor string   `xml:"hypervisor"`
		Proc       procInfo `xml:"processorInfo"`
		VCPU       vcpuInfo `xml:"vCpuInfo"`
		Mem        memInfo  `xml:"memoryInfo"`
		InstStore  bool     `xml:"instanceStorageSupported"`
		// nitro.go's facts: NVMe EBS, ENA, a "d" type's NVMe instance store.
		Ebs     ebsInfoXML      `xml:"ebsInfo"`
		Net     netInfoXML      `xml:"networkInfo"`
		Storage *storageInfoXML `xml:"instanceStorageInfo,omitempty"`
	}
	names := c.p.list("InstanceType")
	if len(names) == 0 {
		names = allInstanceTypes()
	}
	var all []typeXML
	for _, n := range names {
		info, ok := lookupInstanceType(n)
		if !ok {
			return nil, apiErr(400, "InvalidInstanceType", "The following supplied instance types do not exist: [%s]", n)
		}
		x := typeXML{Type: n, Current: !info.instanceStoreRoot, RootTypes: []string{"ebs"}, Hypervisor: "nitro",
			Proc: procInfo{info.archs}, VCPU: vcpuInfo{info.vcpus}, Mem: memInfo{info.memMiB}, InstStore: info.instanceStoreRoot || info.storeGiB > 0}
		if info.instanceStoreRoot {
			x.RootTypes = append(x.RootTypes, "instance-store")
			x.Hypervisor = "xen"
		}
		nitroTypeXML(info, &x.Hypervisor, &x.Ebs, &x.Net, &x.Storage)
		if info.hvm {
			x.Virt = append(x.Virt, "hvm")
		}
		if info.pv {
			x.Virt = append(x.Virt, "paravirtual")
		}
		all = append(all, x)
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	return &struct {
		ResponseMeta
		Types     []typeXML `xml:"instanceTypeSet>item"`
		NextToken string    `xml:"nextToken,omitempty"`
	}{Types: all[start:end], NextToken: next}, nil
}
