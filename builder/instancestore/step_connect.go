package instancestore

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepConnect connects the communicator (Connect: the SDK's StepConnect). When that
// fails, typically "Timeout waiting for SSH.", it shows the last lines of the
// instance's console (GetConsoleOutput), so that the timeout comes with its reason: a
// kernel panic, a root filesystem not found, cloud-init without a key. The console is
// best effort: when GetConsoleOutput fails or is slow, the lines are left out.
type stepConnect struct {
	Connect multistep.Step
	// Lines is how many console lines are shown (default 30); Timeout bounds
	// GetConsoleOutput (default 20s).
	Lines   int
	Timeout time.Duration
}

func (s *stepConnect) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	action := s.Connect.Run(ctx, state)
	if action != multistep.ActionHalt || ctx.Err() != nil {
		return action
	}
	if _, cancelled := state.GetOk(multistep.StateCancelled); cancelled {
		return action
	}
	id := instanceID(state)
	if id == "" {
		return action
	}
	tail := s.consoleTail(ctx, state, id)
	if tail == "" {
		return action
	}
	ui(state).Error(fmt.Sprintf("The last lines of the console of instance %s:\n%s", id, tail))
	if err, ok := state.Get(keyError).(error); ok {
		state.Put(keyError, fmt.Errorf("%w\nthe last lines of the console of instance %s:\n%s", err, id, tail))
	}
	return action
}

func (s *stepConnect) Cleanup(state multistep.StateBag) { s.Connect.Cleanup(state) }

// instanceID is the source instance's id, "" before one was launched.
func instanceID(state multistep.StateBag) string {
	in, _ := state.Get(keyInstance).(ec2types.Instance)
	return aws.ToString(in.InstanceId)
}

// consoleClient is the part of the EC2 client that reads consoles (the amazon plugin's
// clients.Ec2Client interface lacks it; *ec2.Client has it).
type consoleClient interface {
	GetConsoleOutput(context.Context, *ec2.GetConsoleOutputInput, ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error)
}

// consoleTail is the last Lines lines of the instance's console output, "" when there
// is none or it cannot be read in time.
func (s *stepConnect) consoleTail(ctx context.Context, state multistep.StateBag, id string) string {
	lines, timeout := s.Lines, s.Timeout
	if lines <= 0 {
		lines = 30
	}
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Not Latest: that is for Nitro instance types, and none boots an instance
	// store-backed AMI.
	client, ok := ec2Client(state).(consoleClient)
	if !ok {
		return ""
	}
	out, err := client.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
	if err != nil {
		ui(state).Say(fmt.Sprintf("(The console of instance %s could not be read: %s)", id, err))
		return ""
	}
	text, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
	if err != nil {
		return ""
	}
	return lastLines(string(text), lines)
}

// lastLines is the last n lines of s (trailing blank lines dropped), without carriage
// returns and control characters that would garble the UI.
func lastLines(s string, n int) string {
	s = strings.ReplaceAll(s, "\r", "")
	s = strings.TrimRight(s, "\n \t")
	if s == "" {
		return ""
	}
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	for i, l := range ls {
		ls[i] = strings.Map(func(r rune) rune {
			if r < 0x20 && r != '\t' || r == 0x7f {
				return -1
			}
			return r
		}, l)
	}
	return strings.Join(ls, "\n")
}
