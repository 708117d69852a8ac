package ec2sim

import (
	"sort"
	"strings"
)

func sortStrings(s []string) { sort.Strings(s) }

type regionXML struct {
	Name     string `xml:"regionName"`
	Endpoint string `xml:"regionEndpoint"`
	OptIn    string `xml:"optInStatus"`
}

func describeRegions(c *call) (metaSetter, error) {
	names := c.p.list("RegionName")
	want := map[string]bool{}
	for _, n := range names {
		if !knownRegion(n) {
			return nil, apiErr(400, "InvalidParameterValue", "Invalid region: %s", n)
		}
		want[n] = true
	}
	type F = fieldFunc[string]
	fields := map[string]F{
		"region-name":   func(r string) []string { return []string{r} },
		"endpoint":      func(r string) []string { return []string{"ec2." + r + ".amazonaws.com"} },
		"opt-in-status": func(string) []string { return []string{"opt-in-not-required"} },
	}
	resp := &struct {
		ResponseMeta
		Regions []regionXML `xml:"regionInfo>item"`
	}{}
	for _, r := range regions {
		if len(want) > 0 && !want[r] {
			continue
		}
		ok, err := matchFilters(r, c.p.filters(), fields, nil)
		if err != nil {
			return nil, err
		}
		if ok {
			resp.Regions = append(resp.Regions, regionXML{r, "ec2." + r + ".amazonaws.com", "opt-in-not-required"})
		}
	}
	return resp, nil
}

type zoneXML struct {
	Name     string `xml:"zoneName"`
	ID       string `xml:"zoneId"`
	State    string `xml:"zoneState"`
	Region   string `xml:"regionName"`
	Group    string `xml:"groupName"`
	Border   string `xml:"networkBorderGroup"`
	OptIn    string `xml:"optInStatus"`
	ZoneType string `xml:"zoneType"`
}

func describeAvailabilityZones(c *call) (metaSetter, error) {
	names := c.p.list("ZoneName")
	ids := c.p.list("ZoneId")
	var zs []zoneXML
	for i, z := range zonesOf(c.region) {
		zs = append(zs, zoneXML{Name: z, ID: c.region[:3] + "-az" + string(rune('1'+i)), State: "available", Region: c.region,
			Group: c.region, Border: c.region, OptIn: "opt-in-not-required", ZoneType: "availability-zone"})
	}
	for _, n := range names {
		found := false
		for _, z := range zs {
			found = found || z.Name == n
		}
		if !found {
			return nil, apiErr(400, "InvalidParameterValue", "Invalid availability zone: [%s]", n)
		}
	}
	fields := map[string]fieldFunc[zoneXML]{
		"zone-name":     func(z zoneXML) []string { return []string{z.Name} },
		"zone-id":       func(z zoneXML) []string { return []string{z.ID} },
		"state":         func(z zoneXML) []string { return []string{z.State} },
		"region-name":   func(z zoneXML) []string { return []string{z.Region} },
		"zone-type":     func(z zoneXML) []string { return []string{z.ZoneType} },
		"opt-in-status": func(z zoneXML) []string { return []string{z.OptIn} },
	}
	resp := &struct {
		ResponseMeta
		Zones []zoneXML `xml:"availabilityZoneInfo>item"`
	}{}
	for _, z := range zs {
		if len(names) > 0 && !contains(names, z.Name) || len(ids) > 0 && !contains(ids, z.ID) {
			continue
		}
		ok, err := matchFilters(z, c.p.filters(), fields, nil)
		if err != nil {
			return nil, err
		}
		if ok {
			resp.Zones = append(resp.Zones, z)
		}
	}
	return resp, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func describeAccountAttributes(c *call) (metaSetter, error) {
	type val struct {
		V string `xml:"attributeValue"`
	}
	type attr struct {
		Name   string `xml:"attributeName"`
		Values []val  `xml:"attributeValueSet>item"`
	}
	c.s.st.mu.Lock()
	v := c.s.st.defaultVPC(c.region)
	c.s.st.mu.Unlock()
	all := []attr{
		{"supported-platforms", []val{{"VPC"}}},
		{"default-vpc", []val{{v.id}}},
		{"max-instances", []val{{"20"}}},
	}
	want := c.p.list("AttributeName")
	resp := &struct {
		ResponseMeta
		Attrs []attr `xml:"accountAttributeSet>item"`
	}{}
	for _, a := range all {
		if len(want) == 0 || contains(want, a.Name) {
			resp.Attrs = append(resp.Attrs, a)
		}
	}
	return resp, nil
}

type vpcXML struct {
	ID        string `xml:"vpcId"`
	State     string `xml:"state"`
	CIDR      string `xml:"cidrBlock"`
	DHCP      string `xml:"dhcpOptionsId"`
	Tenancy   string `xml:"instanceTenancy"`
	IsDefault bool   `xml:"isDefault"`
	Owner     string `xml:"ownerId"`
	Tags      []tag  `xml:"tagSet>item"`
}

func describeVpcs(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	v := st.defaultVPC(c.region)
	x := vpcXML{ID: v.id, State: "available", CIDR: v.cidr, DHCP: "dopt-00000000000000001", Tenancy: "default", IsDefault: true, Owner: st.account, Tags: st.tagsOf(v.id)}
	for _, id := range c.p.list("VpcId") {
		if id != v.id {
			return nil, apiErr(400, "InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
		}
	}
	fields := map[string]fieldFunc[vpcXML]{
		"vpc-id":                            func(x vpcXML) []string { return []string{x.ID} },
		"is-default":                        func(x vpcXML) []string { return []string{boolStr(x.IsDefault)} },
		"state":                             func(x vpcXML) []string { return []string{x.State} },
		"cidr":                              func(x vpcXML) []string { return []string{x.CIDR} },
		"cidr-block-association.cidr-block": func(x vpcXML) []string { return []string{x.CIDR} },
		"owner-id":                          func(x vpcXML) []string { return []string{x.Owner} },
	}
	resp := &struct {
		ResponseMeta
		Vpcs []vpcXML `xml:"vpcSet>item"`
	}{}
	ok, err := matchFilters(x, c.p.filters(), fields, x.Tags)
	if err != nil {
		return nil, err
	}
	if ok {
		resp.Vpcs = append(resp.Vpcs, x)
	}
	return resp, nil
}

type subnetXML struct {
	ID           string `xml:"subnetId"`
	State        string `xml:"state"`
	VpcID        string `xml:"vpcId"`
	CIDR         string `xml:"cidrBlock"`
	Available    int    `xml:"availableIpAddressCount"`
	Zone         string `xml:"availabilityZone"`
	DefaultForAz bool   `xml:"defaultForAz"`
	MapPublicIP  bool   `xml:"mapPublicIpOnLaunch"`
	Owner        string `xml:"ownerId"`
	Arn          string `xml:"subnetArn"`
	Tags         []tag  `xml:"tagSet>item"`
}

func describeSubnets(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	v := st.defaultVPC(c.region)
	ids := c.p.list("SubnetId")
	for _, id := range ids {
		found := false
		for _, sn := range v.subnets {
			found = found || sn.id == id
		}
		if !found {
			return nil, apiErr(400, "InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
		}
	}
	fields := map[string]fieldFunc[subnetXML]{
		"subnet-id":               func(x subnetXML) []string { return []string{x.ID} },
		"vpc-id":                  func(x subnetXML) []string { return []string{x.VpcID} },
		"availability-zone":       func(x subnetXML) []string { return []string{x.Zone} },
		"availabilityZone":        func(x subnetXML) []string { return []string{x.Zone} },
		"default-for-az":          func(x subnetXML) []string { return []string{boolStr(x.DefaultForAz)} },
		"defaultForAz":            func(x subnetXML) []string { return []string{boolStr(x.DefaultForAz)} },
		"state":                   func(x subnetXML) []string { return []string{x.State} },
		"cidr-block":              func(x subnetXML) []string { return []string{x.CIDR} },
		"owner-id":                func(x subnetXML) []string { return []string{x.Owner} },
		"map-public-ip-on-launch": func(x subnetXML) []string { return []string{boolStr(x.MapPublicIP)} },
	}
	resp := &struct {
		ResponseMeta
		Subnets []subnetXML `xml:"subnetSet>item"`
	}{}
	for _, sn := range v.subnets {
		if len(ids) > 0 && !contains(ids, sn.id) {
			continue
		}
		x := subnetXML{ID: sn.id, State: "available", VpcID: sn.vpcID, CIDR: sn.cidr, Available: 4091, Zone: sn.zone,
			DefaultForAz: true, MapPublicIP: true, Owner: st.account,
			Arn: "arn:aws:ec2:" + c.region + ":" + st.account + ":subnet/" + sn.id, Tags: st.tagsOf(sn.id)}
		ok, err := matchFilters(x, c.p.filters(), fields, x.Tags)
		if err != nil {
			return nil, err
		}
		if ok {
			resp.Subnets = append(resp.Subnets, x)
		}
	}
	return resp, nil
}

// subnetByID finds a subnet of the region's default VPC. Caller holds mu.
func (st *state) subnetByID(region, id string) *subnet {
	for _, sn := range st.defaultVPC(region).subnets {
		if sn.id == id {
			return sn
		}
	}
	return nil
}

func isPrefixedID(id, prefix string) bool {
	if !strings.HasPrefix(id, prefix+"-") {
		return false
	}
	rest := id[len(prefix)+1:]
	if len(rest) != 8 && len(rest) != 17 {
		return false
	}
	return strings.Trim(rest, "0123456789abcdef") == ""
}
