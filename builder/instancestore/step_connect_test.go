package instancestore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// consoleLauncher starts instances that have only a console: what GetConsoleOutput
// answers for them is log (or err).
type consoleLauncher struct {
	log []byte
	err error
}

type consoleInstance struct{ l *consoleLauncher }

func (l *consoleLauncher) Launch(context.Context, ec2sim.LaunchSpec) (ec2sim.Instance, error) {
	return consoleInstance{l}, nil
}
func (i consoleInstance) PrivateIP() string               { return "127.0.0.1" }
func (i consoleInstance) Terminate(context.Context) error { return nil }
func (i consoleInstance) ConsoleOutput() ([]byte, error)  { return i.l.log, i.l.err }

// timeoutStep fails as the SDK's StepConnect does when SSH never answers.
type timeoutStep struct{ cleaned bool }

func (s *timeoutStep) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	err := errors.New("Timeout waiting for SSH.")
	state.Put(keyError, err)
	ui(state).Error(err.Error())
	return multistep.ActionHalt
}
func (s *timeoutStep) Cleanup(multistep.StateBag) { s.cleaned = true }

func TestStepConnectShowsConsole(t *testing.T) {
	s := startSim(t)
	launcher := &consoleLauncher{}
	srv, err := ec2sim.Start(ec2sim.Config{Credentials: ec2sim.Credentials{AccessKeyID: "AKIATESTBUILDERSTEPS", SecretAccessKey: "c2VjcmV0LWZvci10aGUtYnVpbGRlci1zdGVwcy10ZXN0"},
		DataDir: t.TempDir(), Launcher: launcher})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	s.ec2sim = srv
	s.ec2 = ec2.NewFromConfig(s.cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.URL()) })
	img := seededImage(t, s)
	run, err := s.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: img.ImageId, InstanceType: "m3.medium", MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	inst := run.Instances[0]
	t.Cleanup(func() {
		s.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(inst.InstanceId)}})
	})

	var log strings.Builder
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&log, "[    %d.000000] boot line %d\r\n", i, i)
	}
	log.WriteString("Kernel panic - not syncing: VFS: Unable to mount root fs\r\n\r\n")
	for _, tc := range []struct {
		name      string
		log       string
		err       error
		want      []string
		wantNot   []string
		noConsole bool
	}{
		{"tail", log.String(), nil, []string{"Timeout waiting for SSH.", "Kernel panic - not syncing", "boot line 12"}, []string{"boot line 11\n", "\r"}, false},
		{"empty-console", "", nil, nil, nil, true},
		{"console-fails", "", errors.New("serial log unreadable"), nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			launcher.log, launcher.err = []byte(tc.log), tc.err
			st, mock := s.state(testConfig(t))
			st.Put(keyEC2, s.ec2)
			st.Put(keyInstance, inst)
			inner := &timeoutStep{}
			step := &stepConnect{Connect: inner}
			if step.Run(context.Background(), st) != multistep.ActionHalt {
				t.Fatal("the step went on after the communicator's timeout")
			}
			msg := st.Get(keyError).(error).Error()
			if !strings.HasPrefix(msg, "Timeout waiting for SSH.") {
				t.Errorf("error %q lost the communicator's message", msg)
			}
			if tc.noConsole {
				if strings.Contains(msg, "console") {
					t.Errorf("error %q shows a console it could not read", msg)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not show %q:\n%s", w, msg)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(msg, w) {
					t.Errorf("error shows %q (more than the last 30 lines, or raw):\n%s", w, msg)
				}
			}
			if !tc.noConsole && !strings.Contains(mock.ErrorMessage, "Kernel panic") {
				t.Errorf("the UI did not show the console: %q", mock.ErrorMessage)
			}
			step.Cleanup(st)
			if !inner.cleaned {
				t.Error("the communicator step's Cleanup did not run")
			}
		})
	}
}
