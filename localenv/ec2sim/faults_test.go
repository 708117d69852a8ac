package ec2sim

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

func TestParseFaults(t *testing.T) {
	f, err := ParseFaults("rate=0.2, seed=7,kinds=RequestLimitExceeded,TerminateInstances=1")
	if err != nil || f.Rate != 0.2 || f.Seed != 7 || len(f.Kinds) != 1 || f.Actions["TerminateInstances"] != 1 {
		t.Fatalf("%+v %v", f, err)
	}
	for _, bad := range []string{"rate=2", "rate", "seed=x", "kinds=Slow", "Nope=0.1"} {
		if _, err := ParseFaults(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestFaultsAnswer503: an injected fault is HTTP 503 with EC2's code, and changes
// nothing (the key pair of a throttled CreateKeyPair does not exist).
func TestFaultsAnswer503(t *testing.T) {
	e := startServer(t, Config{Faults: Faults{Actions: map[string]float64{"CreateKeyPair": 1}, Kinds: []FaultKind{FaultRequestLimitExceeded}}})
	ctx := ctxT(t)
	_, err := e.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k")})
	wantCode(t, err, "RequestLimitExceeded")
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != 503 {
		t.Fatalf("want HTTP 503, got %v", err)
	}
	if kp, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{}); err != nil || len(kp.KeyPairs) != 0 {
		t.Fatalf("after a throttled CreateKeyPair: %v %+v", err, kp)
	}
	e.srv.SetFaults(Faults{Rate: 1, Kinds: []FaultKind{FaultUnavailable}})
	_, err = e.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	wantCode(t, err, "Unavailable")
	if got := e.srv.FaultCounts(); got["CreateKeyPair/RequestLimitExceeded"] != 1 || got["DescribeRegions/Unavailable"] != 1 {
		t.Fatalf("counts %v", got)
	}
}

// TestStandardRetryerRidesOutThrottling proves the retry policy the plugin runs with:
// packer-plugin-amazon's access config builds aws-sdk-go-v2's standard retryer with
// max_retries (default 10) attempts; RequestLimitExceeded is one of its throttle codes
// and 503 a retryable status. With 20% of calls failed, every call succeeds and each
// injected fault was retried.
func TestStandardRetryerRidesOutThrottling(t *testing.T) {
	e := startServer(t, Config{Faults: Faults{Rate: 0.2, Seed: 3}})
	ctx := ctxT(t)
	c := ec2Client(e.srv, testCreds, "us-east-1", func(o *ec2.Options) {
		o.Retryer = retry.AddWithMaxAttempts(retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxBackoff = 20 * time.Millisecond // the policy, on a short clock
		}), 10)
		o.RetryMaxAttempts = 10 // the test helper's config says 1
	})
	const n = 30
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("k%d", i)
		if _, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String(name)}); err != nil {
			t.Fatalf("CreateKeyPair %d under throttling: %v", i, err)
		}
		if _, err := c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}); err != nil {
			t.Fatalf("DeleteKeyPair %d under throttling: %v", i, err)
		}
	}
	injected := 0
	for _, v := range e.srv.FaultCounts() {
		injected += v
	}
	t.Logf("%d calls, %d injected faults, all retried: %s", 2*n, injected, e.srv.FaultSummary())
	if injected < 5 {
		t.Fatalf("only %d of %d calls were failed at a 20%% rate", injected, 2*n)
	}
	// One attempt (no retry) fails some of the same calls: the retries above are what
	// made them pass.
	one := ec2Client(e.srv, testCreds, "us-east-1")
	failed := 0
	for i := 0; i < n; i++ {
		if _, err := one.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Fatalf("no call failed without retries at a 20%% rate")
	}
}
