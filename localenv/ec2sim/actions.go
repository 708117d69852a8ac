package ec2sim

import (
	"encoding/base64"
	"strconv"
)

type handler func(c *call) (metaSetter, error)

// ec2Actions is every EC2 action the simulator implements; anything else is
// InvalidAction.
var ec2Actions map[string]handler

func init() {
	ec2Actions = map[string]handler{
		"DescribeRegions":                      describeRegions,
		"DescribeAvailabilityZones":            describeAvailabilityZones,
		"DescribeAccountAttributes":            describeAccountAttributes,
		"DescribeVpcs":                         describeVpcs,
		"DescribeSubnets":                      describeSubnets,
		"DescribeSecurityGroups":               describeSecurityGroups,
		"CreateSecurityGroup":                  createSecurityGroup,
		"AuthorizeSecurityGroupIngress":        authorizeSecurityGroupIngress,
		"DeleteSecurityGroup":                  deleteSecurityGroup,
		"CreateKeyPair":                        createKeyPair,
		"ImportKeyPair":                        importKeyPair,
		"DeleteKeyPair":                        deleteKeyPair,
		"DescribeKeyPairs":                     describeKeyPairs,
		"CreateTags":                           createTags,
		"DeleteTags":                           deleteTags,
		"DescribeTags":                         describeTags,
		"DescribeImages":                       describeImages,
		"RegisterImage":                        registerImage,
		"DeregisterImage":                      deregisterImage,
		"DescribeImageAttribute":               describeImageAttribute,
		"ModifyImageAttribute":                 modifyImageAttribute,
		"ResetImageAttribute":                  resetImageAttribute,
		"CopyImage":                            copyImage,
		"RunInstances":                         runInstances,
		"GetConsoleOutput":                     getConsoleOutput,
		"DescribeInstances":                    describeInstances,
		"DescribeInstanceStatus":               describeInstanceStatus,
		"TerminateInstances":                   terminateInstances,
		"StopInstances":                        stopInstances,
		"StartInstances":                       startInstances,
		"CreateImage":                          createImage,
		"DescribeInstanceAttribute":            describeInstanceAttribute,
		"DescribeInstanceTypeOfferings":        describeInstanceTypeOfferings,
		"DescribeInstanceTypes":                describeInstanceTypes,
		"ModifyInstanceAttribute":              modifyInstanceAttribute,
		"DescribeVolumes":                      describeVolumes,
		"DescribeSnapshots":                    describeSnapshots,
		"CreateVolume":                         createVolume,
		"AttachVolume":                         attachVolume,
		"DetachVolume":                         detachVolume,
		"DeleteVolume":                         deleteVolume,
		"CreateSnapshot":                       createSnapshot,
		"DeleteSnapshot":                       deleteSnapshot,
		"EnableImageDeprecation":               enableImageDeprecation,
		"DisableImageDeprecation":              disableImageDeprecation,
		"EnableImageDeregistrationProtection":  enableImageDeregistrationProtection,
		"DisableImageDeregistrationProtection": disableImageDeregistrationProtection,
	}
}

// Actions lists the implemented EC2 actions (for docs and the localenv banner).
func Actions() []string {
	out := make([]string, 0, len(ec2Actions))
	for k := range ec2Actions {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}

// page cuts a listing of n items by MaxResults/NextToken. The token is the opaque
// base64 of the next offset.
func (c *call) page(n int) (start, end int, next string, err error) {
	max, err := c.p.integer("MaxResults", 0)
	if err != nil {
		return 0, 0, "", err
	}
	if tok := c.p.get("NextToken"); tok != "" {
		b, derr := base64.RawURLEncoding.DecodeString(tok)
		off, aerr := strconv.Atoi(string(b))
		if derr != nil || aerr != nil || off < 0 || off > n {
			return 0, 0, "", apiErr(400, "InvalidPaginationToken", "The pagination token '%s' is invalid", tok)
		}
		start = off
	}
	if max < 0 {
		return 0, 0, "", apiErr(400, "InvalidParameterValue", "MaxResults must be positive")
	}
	end = n
	if max > 0 && start+max < n {
		end = start + max
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
	}
	return start, end, next, nil
}
