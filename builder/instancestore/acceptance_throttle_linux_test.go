package instancestore

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// TestAcceptanceThrottledEC2 runs the local build with 20% of all EC2 calls (cleanup
// calls too) answered RequestLimitExceeded or Unavailable (HTTP 503). The build rides
// them out with packer-plugin-amazon's retry policy (aws-sdk-go-v2's standard retryer
// with max_retries = 10 attempts, exponential backoff with full jitter capped at 20 s,
// RequestLimitExceeded a throttle code and 503 a retryable status; the waiters'
// Describe* calls go through the same retryer) and leaves nothing behind. The cleanup
// calls (TerminateInstances, DeleteKeyPair, DeleteSecurityGroup) fail half the time,
// so that a cleanup that gives up after one try would leak.
func TestAcceptanceThrottledEC2(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	outDir := t.TempDir()
	bucket := "acc-throttled"
	a.local.EC2.SetFaults(ec2sim.Faults{Rate: 0.2, Seed: 15,
		Actions: map[string]float64{"TerminateInstances": 0.5, "DeleteKeyPair": 0.5, "DeleteSecurityGroup": 0.5}})
	out, err, _ := a.build(t, outDir, bucket, "")
	summary := a.local.EC2.FaultCounts()
	a.local.EC2.SetFaults(ec2sim.Faults{}) // the checks below are not under test
	if err != nil {
		a.failWithLog(t, outDir, out, err)
	}
	injected := 0
	for _, n := range summary {
		injected += n
	}
	t.Logf("injected %d EC2 faults, every one retried (the build passed): %s", injected, a.local.EC2.FaultSummary())
	if injected < 5 {
		t.Fatalf("only %d EC2 calls were throttled: the test did not test throttling", injected)
	}
	data, err := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Builds []struct {
			ArtifactID string            `json:"artifact_id"`
			CustomData map[string]string `json:"custom_data"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(data, &manifest); err != nil || len(manifest.Builds) != 1 {
		t.Fatalf("packer-manifest.json: %v\n%s", err, data)
	}
	_, amiID, _ := strings.Cut(manifest.Builds[0].ArtifactID, ":")
	a.checkLeftovers(t, bucket, strings.TrimPrefix(manifest.Builds[0].CustomData["bundle_manifest"], "s3://"))
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(amiID)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
}
