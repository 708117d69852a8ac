package instancestore

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// BuildTagKey is the tag every resource the build launches carries (through run_tags):
// the instance, the temporary key pair and the temporary security group.
const BuildTagKey = "packer-instancestore-build"

// stepSweep comes first in the step list, so its Cleanup runs last. The shared amazon
// steps remember a resource only once EC2 has answered; a build interrupted while
// RunInstances, CreateKeyPair or CreateSecurityGroup is in flight would leave that
// resource behind. All of them carry the build's tag, so on failure or cancel this
// Cleanup finds whatever is left by the tag and removes it.
type stepSweep struct {
	BuildID       string
	PollingConfig *awscommon.AWSPollingConfig
}

// keyPairDescriber is the part of *ec2.Client that the shared client interface lacks.
type keyPairDescriber interface {
	DescribeKeyPairs(context.Context, *ec2.DescribeKeyPairsInput, ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error)
}

func (s *stepSweep) Run(context.Context, multistep.StateBag) multistep.StepAction {
	return multistep.ActionContinue
}

func (s *stepSweep) filter() []ec2types.Filter {
	return []ec2types.Filter{{Name: aws.String("tag:" + BuildTagKey), Values: []string{s.BuildID}}}
}

func (s *stepSweep) Cleanup(state multistep.StateBag) {
	if !failed(state) || s.BuildID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	client := ec2Client(state)
	say := func(format string, a ...any) { ui(state).Say(fmt.Sprintf(format, a...)) }
	warn := func(format string, a ...any) { ui(state).Error(fmt.Sprintf(format, a...)) }

	insts, err := client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: append(s.filter(),
		ec2types.Filter{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}})})
	if err != nil {
		warn("Cannot look for instances of this build (tag %s=%s) to terminate: %s", BuildTagKey, s.BuildID, err)
	} else {
		for _, r := range insts.Reservations {
			for _, in := range r.Instances {
				id := aws.ToString(in.InstanceId)
				say("Terminating instance %s, launched by this interrupted build...", id)
				if _, err := client.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
					warn("Cannot terminate instance %s, terminate it yourself: %s", id, err)
					continue
				}
				if err := s.PollingConfig.WaitUntilInstanceTerminated(ctx, client, id); err != nil {
					warn("Instance %s did not terminate: %s", id, err)
				}
			}
		}
	}

	var kps *ec2.DescribeKeyPairsOutput
	if kc, ok := client.(keyPairDescriber); !ok {
		err = fmt.Errorf("the EC2 client cannot describe key pairs")
	} else {
		kps, err = kc.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: s.filter()})
	}
	if err != nil {
		warn("Cannot look for key pairs of this build (tag %s=%s) to delete: %s", BuildTagKey, s.BuildID, err)
	} else {
		for _, k := range kps.KeyPairs {
			say("Deleting key pair %s, created by this interrupted build...", aws.ToString(k.KeyName))
			if _, err := client.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyPairId: k.KeyPairId}); err != nil {
				warn("Cannot delete key pair %s, delete it yourself: %s", aws.ToString(k.KeyName), err)
			}
		}
	}

	sgs, err := client.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: s.filter()})
	if err != nil {
		warn("Cannot look for security groups of this build (tag %s=%s) to delete: %s", BuildTagKey, s.BuildID, err)
		return
	}
	for _, g := range sgs.SecurityGroups {
		say("Deleting security group %s, created by this interrupted build...", aws.ToString(g.GroupId))
		var err error
		// A group stays in use for a while after its instance terminated.
		for i := 0; i < 10; i++ {
			if _, err = client.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: g.GroupId}); err == nil {
				break
			}
			time.Sleep(3 * time.Second)
		}
		if err != nil {
			warn("Cannot delete security group %s, delete it yourself: %s", aws.ToString(g.GroupId), err)
		}
	}
}
