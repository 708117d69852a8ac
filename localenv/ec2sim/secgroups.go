package ec2sim

import (
	"net"
	"strconv"
	"strings"
)

type ipRangeXML struct {
	CIDR string `xml:"cidrIp"`
}

type userGroupXML struct {
	GroupID string `xml:"groupId"`
	UserID  string `xml:"userId"`
}

type ipPermissionXML struct {
	Protocol string         `xml:"ipProtocol"`
	FromPort *int           `xml:"fromPort,omitempty"`
	ToPort   *int           `xml:"toPort,omitempty"`
	Groups   []userGroupXML `xml:"groups>item"`
	Ranges   []ipRangeXML   `xml:"ipRanges>item"`
}

type secGroupXML struct {
	Owner       string            `xml:"ownerId"`
	ID          string            `xml:"groupId"`
	Name        string            `xml:"groupName"`
	Description string            `xml:"groupDescription"`
	VpcID       string            `xml:"vpcId"`
	Arn         string            `xml:"securityGroupArn"`
	Ingress     []ipPermissionXML `xml:"ipPermissions>item"`
	Egress      []ipPermissionXML `xml:"ipPermissionsEgress>item"`
	Tags        []tag             `xml:"tagSet>item"`
}

func permsXML(ps []ipPermission, owner string) []ipPermissionXML {
	var out []ipPermissionXML
	for _, p := range ps {
		x := ipPermissionXML{Protocol: p.Protocol}
		if p.HasPorts {
			from, to := p.FromPort, p.ToPort
			x.FromPort, x.ToPort = &from, &to
		}
		for _, r := range p.Ranges {
			x.Ranges = append(x.Ranges, ipRangeXML{r})
		}
		for _, g := range p.Groups {
			x.Groups = append(x.Groups, userGroupXML{g, owner})
		}
		out = append(out, x)
	}
	return out
}

func (c *call) groupXML(g *secGroup) secGroupXML {
	return secGroupXML{Owner: g.owner, ID: g.id, Name: g.name, Description: g.description, VpcID: g.vpcID,
		Arn:     "arn:aws:ec2:" + g.region + ":" + g.owner + ":security-group/" + g.id,
		Ingress: permsXML(g.ingress, g.owner), Egress: permsXML(g.egress, g.owner), Tags: c.s.st.tagsOf(g.id)}
}

// findGroup resolves a group by id or by name in the region. Caller holds mu.
func (c *call) findGroup(id, name string) (*secGroup, error) {
	st := c.s.st
	if id != "" {
		if !isPrefixedID(id, "sg") {
			return nil, apiErr(400, "InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", id)
		}
		g, ok := st.groups[id]
		if !ok || g.region != c.region {
			return nil, apiErr(400, "InvalidGroup.NotFound", "The security group '%s' does not exist", id)
		}
		return g, nil
	}
	for _, g := range st.regionGroups(c.region) {
		if g.name == name {
			return g, nil
		}
	}
	return nil, apiErr(400, "InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC '%s'", name, st.defaultVPC(c.region).id)
}

func describeSecurityGroups(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var picked []*secGroup
	ids, names := c.p.list("GroupId"), c.p.list("GroupName")
	for _, id := range ids {
		g, err := c.findGroup(id, "")
		if err != nil {
			return nil, err
		}
		picked = append(picked, g)
	}
	for _, n := range names {
		g, err := c.findGroup("", n)
		if err != nil {
			return nil, err
		}
		picked = append(picked, g)
	}
	if len(ids)+len(names) == 0 {
		picked = st.regionGroups(c.region)
	}
	fields := map[string]fieldFunc[*secGroup]{
		"group-id":    func(g *secGroup) []string { return []string{g.id} },
		"group-name":  func(g *secGroup) []string { return []string{g.name} },
		"vpc-id":      func(g *secGroup) []string { return []string{g.vpcID} },
		"description": func(g *secGroup) []string { return []string{g.description} },
		"owner-id":    func(g *secGroup) []string { return []string{g.owner} },
	}
	resp := &struct {
		ResponseMeta
		Groups    []secGroupXML `xml:"securityGroupInfo>item"`
		NextToken string        `xml:"nextToken,omitempty"`
	}{}
	var all []*secGroup
	for _, g := range picked {
		ok, err := matchFilters(g, c.p.filters(), fields, st.tagsOf(g.id))
		if err != nil {
			return nil, err
		}
		if ok {
			all = append(all, g)
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	for _, g := range all[start:end] {
		resp.Groups = append(resp.Groups, c.groupXML(g))
	}
	resp.NextToken = next
	return resp, nil
}

func createSecurityGroup(c *call) (metaSetter, error) {
	name, desc, vpcID := c.p.get("GroupName"), c.p.get("GroupDescription"), c.p.get("VpcId")
	if name == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter groupName")
	}
	if desc == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter groupDescription")
	}
	if len(name) > 255 || strings.HasPrefix(name, "sg-") {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter GroupName is invalid. Group names may not be in the format sg-* and are at most 255 characters.", name)
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	v := st.defaultVPC(c.region)
	if vpcID != "" && vpcID != v.id {
		return nil, apiErr(400, "InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpcID)
	}
	for _, g := range st.regionGroups(c.region) {
		if g.name == name {
			return nil, apiErr(400, "InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, v.id)
		}
	}
	tags, err := c.p.tagSpecs("security-group")
	if err != nil {
		return nil, err
	}
	g := &secGroup{id: newID("sg"), name: name, description: desc, vpcID: v.id, region: c.region, owner: st.account, seq: st.next()}
	g.egress = []ipPermission{{Protocol: "-1", Ranges: []string{"0.0.0.0/0"}}}
	st.groups[g.id] = g
	st.setTags(g.id, tags)
	return &struct {
		ResponseMeta
		Return  bool   `xml:"return"`
		GroupID string `xml:"groupId"`
		Arn     string `xml:"securityGroupArn"`
		Tags    []tag  `xml:"tagSet>item"`
	}{Return: true, GroupID: g.id, Arn: "arn:aws:ec2:" + c.region + ":" + st.account + ":security-group/" + g.id, Tags: st.tagsOf(g.id)}, nil
}

func authorizeSecurityGroupIngress(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	g, err := c.findGroup(c.p.get("GroupId"), c.p.get("GroupName"))
	if err != nil {
		return nil, err
	}
	var perms []ipPermission
	parse := func(p params, rangesKey, cidrKey string) error {
		proto := strings.ToLower(p.get("IpProtocol"))
		switch proto {
		case "tcp", "udp", "icmp", "-1", "6", "17", "1":
		case "":
			return apiErr(400, "MissingParameter", "The request must contain the parameter ipProtocol")
		default:
			return apiErr(400, "InvalidParameterValue", "Invalid value '%s' for IP protocol. Unknown protocol.", proto)
		}
		perm := ipPermission{Protocol: proto}
		if proto != "-1" {
			from, err1 := strconv.Atoi(p.get("FromPort"))
			to, err2 := strconv.Atoi(p.get("ToPort"))
			if err1 != nil || err2 != nil {
				return apiErr(400, "InvalidParameterValue", "Invalid value for portRange. Must specify both from and to ports with TCP/UDP.")
			}
			if proto != "icmp" && proto != "1" && (from < 0 || to > 65535 || from > to) {
				return apiErr(400, "InvalidParameterValue", "Invalid value for portRange. From port (%d) must be <= to port (%d), both in 0..65535.", from, to)
			}
			perm.FromPort, perm.ToPort, perm.HasPorts = from, to, true
		}
		var cidrs []string
		if rangesKey != "" {
			for _, r := range p.structs(rangesKey) {
				cidrs = append(cidrs, r.get("CidrIp"))
			}
			for _, gp := range p.structs("Groups") {
				gg, err := c.findGroup(gp.get("GroupId"), gp.get("GroupName"))
				if err != nil {
					return err
				}
				perm.Groups = append(perm.Groups, gg.id)
			}
		}
		if cidrKey != "" && p.get(cidrKey) != "" {
			cidrs = append(cidrs, p.get(cidrKey))
		}
		for _, cidr := range cidrs {
			if _, _, err := net.ParseCIDR(cidr); err != nil {
				return apiErr(400, "InvalidParameterValue", "CIDR block %s is malformed", cidr)
			}
		}
		perm.Ranges = cidrs
		for _, have := range g.ingress {
			if have.Protocol == perm.Protocol && have.FromPort == perm.FromPort && have.ToPort == perm.ToPort {
				for _, r := range perm.Ranges {
					if contains(have.Ranges, r) {
						return apiErr(400, "InvalidPermission.Duplicate", "the specified rule \"peer: %s, %s, from port: %d, to port: %d, ALLOW\" already exists", r, strings.ToUpper(proto), perm.FromPort, perm.ToPort)
					}
				}
			}
		}
		perms = append(perms, perm)
		return nil
	}
	if sets := c.p.structs("IpPermissions"); len(sets) > 0 {
		for _, p := range sets {
			if err := parse(p, "IpRanges", ""); err != nil {
				return nil, err
			}
		}
	} else if err := parse(c.p, "", "CidrIp"); err != nil {
		return nil, err
	}
	g.ingress = append(g.ingress, perms...)
	return &returnResp{Return: true}, nil
}

func deleteSecurityGroup(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	g, err := c.findGroup(c.p.get("GroupId"), c.p.get("GroupName"))
	if err != nil {
		return nil, err
	}
	if g.name == "default" {
		return nil, apiErr(400, "CannotDelete", "the specified group: \"%s\" name: \"default\" cannot be deleted by a user", g.id)
	}
	for _, in := range st.instances {
		if in.state != stateTerminated && contains(in.groups, g.id) {
			return nil, apiErr(400, "DependencyViolation", "resource %s has a dependent object", g.id)
		}
	}
	delete(st.groups, g.id)
	delete(st.tags, g.id)
	return &returnResp{Return: true}, nil
}
