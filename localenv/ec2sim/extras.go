package ec2sim

import (
	"time"
)

// ownImage resolves an AMI the caller owns. Caller holds mu.
func (c *call) ownImage(id string) (*image, error) {
	im, err := c.findImage(id)
	if err != nil {
		return nil, err
	}
	if im.owner != c.s.st.account {
		return nil, apiErr(400, "AuthFailure", "Not authorized for image:%s", im.id)
	}
	return im, nil
}

func enableImageDeprecation(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.ownImage(c.p.get("ImageId"))
	if err != nil {
		return nil, err
	}
	at, err := time.Parse(time.RFC3339, c.p.get("DeprecateAt"))
	if err != nil {
		return nil, apiErr(400, "InvalidParameterValue", "DeprecateAt %q is not an ISO 8601 time", c.p.get("DeprecateAt"))
	}
	if at.Before(time.Now()) {
		return nil, apiErr(400, "InvalidParameterValue", "DeprecateAt must be in the future")
	}
	im.deprecateAt = at
	return &returnResp{Return: true}, nil
}

func disableImageDeprecation(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.ownImage(c.p.get("ImageId"))
	if err != nil {
		return nil, err
	}
	im.deprecateAt = time.Time{}
	return &returnResp{Return: true}, nil
}

func enableImageDeregistrationProtection(c *call) (metaSetter, error) {
	return setDeregProtection(c, true)
}

func disableImageDeregistrationProtection(c *call) (metaSetter, error) {
	return setDeregProtection(c, false)
}

func setDeregProtection(c *call, on bool) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	im, err := c.ownImage(c.p.get("ImageId"))
	if err != nil {
		return nil, err
	}
	im.deregProtection = on
	return &struct {
		ResponseMeta
		Return string `xml:"return"`
	}{Return: map[bool]string{true: "enabled", false: "disabled"}[on]}, nil
}

func modifyInstanceAttribute(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ins, err := c.findInstances([]string{c.p.get("InstanceId")})
	if err != nil {
		return nil, err
	}
	in := ins[0]
	if in.state == stateTerminated {
		return nil, apiErr(400, "IncorrectInstanceState", "The instance '%s' is not in a state from which it can be modified.", in.id)
	}
	set := false
	if v, ok, err := c.p.sub("DisableApiTermination").boolean("Value"); err != nil {
		return nil, err
	} else if ok {
		in.disableAPITermination, set = v, true
	}
	if v := c.p.sub("InstanceInitiatedShutdownBehavior").get("Value"); v != "" {
		if v != "stop" && v != "terminate" {
			return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter instanceInitiatedShutdownBehavior is invalid", v)
		}
		in.shutdownBehavior, set = v, true
	}
	if groups := c.p.list("GroupId"); len(groups) > 0 {
		for _, g := range groups {
			if _, err := c.findGroup(g, ""); err != nil {
				return nil, err
			}
		}
		in.groups, set = groups, true
	}
	// Attributes that need a stopped instance (ebs_instances.go).
	if ok, err := c.modifyStopped(in); err != nil {
		return nil, err
	} else if ok {
		set = true
	}
	if !set {
		if v, _, _ := c.p.sub("SourceDestCheck").boolean("Value"); v || c.p.has("SourceDestCheck.Value") {
			return &returnResp{Return: true}, nil
		}
		return nil, apiErr(400, "MissingParameter", "ModifyInstanceAttribute needs an attribute to change")
	}
	return &returnResp{Return: true}, nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]+'a'-'A') + s[1:]
}
