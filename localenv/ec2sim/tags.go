package ec2sim

import "strings"

// resourceType names what an id is, the way DescribeTags reports it.
func resourceType(id string) string {
	switch {
	case strings.HasPrefix(id, "ami-"):
		return "image"
	case strings.HasPrefix(id, "i-"):
		return "instance"
	case strings.HasPrefix(id, "sg-"):
		return "security-group"
	case strings.HasPrefix(id, "key-"):
		return "key-pair"
	case strings.HasPrefix(id, "vpc-"):
		return "vpc"
	case strings.HasPrefix(id, "subnet-"):
		return "subnet"
	case strings.HasPrefix(id, "snap-"):
		return "snapshot"
	case strings.HasPrefix(id, "vol-"):
		return "volume"
	}
	return ""
}

// resourceExists checks an id the way CreateTags does. Caller holds mu.
func (c *call) resourceExists(id string) error {
	st := c.s.st
	rt := resourceType(id)
	switch rt {
	case "image":
		if im, ok := st.images[id]; ok && im.region == c.region && im.state != "deregistered" {
			return nil
		}
		return apiErr(400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
	case "instance":
		if in, ok := st.instances[id]; ok && in.region == c.region {
			return nil
		}
		return apiErr(400, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	case "security-group":
		if g, ok := st.groups[id]; ok && g.region == c.region {
			return nil
		}
		return apiErr(400, "InvalidGroup.NotFound", "The security group '%s' does not exist", id)
	case "key-pair":
		for _, k := range st.regionKeyPairs(c.region) {
			if k.id == id {
				return nil
			}
		}
		return apiErr(400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist", id)
	case "vpc":
		if st.defaultVPC(c.region).id == id {
			return nil
		}
		return apiErr(400, "InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
	case "subnet":
		if st.subnetByID(c.region, id) != nil {
			return nil
		}
		return apiErr(400, "InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
	case "volume":
		_, err := c.lookupVolume(id)
		return err
	case "snapshot":
		sn, err := c.lookupSnapshot(id)
		if err == nil && sn.owner != st.account {
			// Tagging a snapshot of another account (a seeded AMI's root) is not allowed.
			return apiErr(400, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
		return err
	}
	return apiErr(400, "InvalidID", "The ID '%s' is not valid", id)
}

func createTags(c *call) (metaSetter, error) {
	ids := c.p.list("ResourceId")
	tags := c.p.tagPairs("Tag")
	if len(ids) == 0 {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	if len(tags) == 0 {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter tagSet")
	}
	for _, t := range tags {
		if t.Key == "" || len(t.Key) > 128 || len(t.Value) > 256 {
			return nil, apiErr(400, "InvalidParameterValue", "Tag keys must be 1-128 characters and values at most 256 (key %q)", t.Key)
		}
		if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
			return nil, apiErr(400, "InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, id := range ids {
		if err := c.resourceExists(id); err != nil {
			return nil, err
		}
	}
	for _, id := range ids {
		st.setTags(id, tags)
	}
	return &returnResp{Return: true}, nil
}

func deleteTags(c *call) (metaSetter, error) {
	ids := c.p.list("ResourceId")
	if len(ids) == 0 {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	tagParams := c.p.structs("Tag")
	for _, id := range ids {
		m := st.tags[id]
		if len(tagParams) == 0 {
			delete(st.tags, id)
			continue
		}
		for _, tp := range tagParams {
			k := tp.get("Key")
			// A tag given with a value is deleted only when the value matches.
			if tp.has("Value") && m[k] != tp.get("Value") {
				continue
			}
			delete(m, k)
		}
	}
	return &returnResp{Return: true}, nil
}

type tagDescXML struct {
	ResourceID   string `xml:"resourceId"`
	ResourceType string `xml:"resourceType"`
	Key          string `xml:"key"`
	Value        string `xml:"value"`
}

func describeTags(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var all []tagDescXML
	ids := make([]string, 0, len(st.tags))
	for id := range st.tags {
		ids = append(ids, id)
	}
	sortStrings(ids)
	fields := map[string]fieldFunc[tagDescXML]{
		"resource-id":   func(t tagDescXML) []string { return []string{t.ResourceID} },
		"resource-type": func(t tagDescXML) []string { return []string{t.ResourceType} },
		"key":           func(t tagDescXML) []string { return []string{t.Key} },
		"value":         func(t tagDescXML) []string { return []string{t.Value} },
	}
	for _, id := range ids {
		if c.resourceExists(id) != nil {
			continue // another region's, or gone
		}
		for _, t := range st.tagsOf(id) {
			d := tagDescXML{id, resourceType(id), t.Key, t.Value}
			ok, err := matchFilters(d, c.p.filters(), fields, nil)
			if err != nil {
				return nil, err
			}
			if ok {
				all = append(all, d)
			}
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	return &struct {
		ResponseMeta
		Tags      []tagDescXML `xml:"tagSet>item"`
		NextToken string       `xml:"nextToken,omitempty"`
	}{Tags: all[start:end], NextToken: next}, nil
}
