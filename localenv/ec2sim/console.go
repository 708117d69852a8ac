package ec2sim

import (
	"encoding/base64"
	"time"
)

// metadataOptions reads RunInstances' MetadataOptions (the metadata service settings of
// the instance) with EC2's defaults and checks.
func metadataOptions(p params) (MetadataOptions, error) {
	o := MetadataOptions{HTTPTokens: p.get("HttpTokens"), HTTPEndpoint: p.get("HttpEndpoint")}
	switch o.HTTPTokens {
	case "":
		o.HTTPTokens = "optional"
	case "optional", "required":
	default:
		return o, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter HttpTokens is invalid. Valid values are optional and required.", o.HTTPTokens)
	}
	switch o.HTTPEndpoint {
	case "":
		o.HTTPEndpoint = "enabled"
	case "enabled", "disabled":
	default:
		return o, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter HttpEndpoint is invalid. Valid values are enabled and disabled.", o.HTTPEndpoint)
	}
	hop, err := p.integer("HttpPutResponseHopLimit", 1)
	if err != nil {
		return o, err
	}
	if hop < 1 || hop > 64 {
		return o, apiErr(400, "InvalidParameterValue", "Value (%d) for parameter HttpPutResponseHopLimit is invalid. Valid values are 1 to 64.", hop)
	}
	o.HopLimit = hop
	return o, nil
}

// getConsoleOutput answers the instance's serial console, base64 encoded as EC2 does.
// Instances whose launcher has no console (the namespace launcher) have empty output.
func getConsoleOutput(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	ins, err := c.findInstances([]string{c.p.get("InstanceId")})
	if err != nil {
		st.mu.Unlock()
		return nil, err
	}
	in := ins[0]
	run := in.run
	st.mu.Unlock()
	resp := &struct {
		ResponseMeta
		InstanceID string `xml:"instanceId"`
		Timestamp  string `xml:"timestamp"`
		Output     string `xml:"output"`
	}{InstanceID: in.id, Timestamp: time.Now().UTC().Format("2006-01-02T15:04:05.000Z")}
	if cr, ok := run.(ConsoleReader); ok && run != nil {
		out, err := cr.ConsoleOutput()
		if err != nil {
			return nil, apiErr(500, "InternalError", "reading the console of %s: %v", in.id, err)
		}
		// EC2 returns the most recent 64 KB.
		if len(out) > 64<<10 {
			out = out[len(out)-64<<10:]
		}
		resp.Output = base64.StdEncoding.EncodeToString(out)
	}
	return resp, nil
}
