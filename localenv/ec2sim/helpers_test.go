package ec2sim

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

var testCreds = Credentials{AccessKeyID: "AKIDSIMTEST000000001", SecretAccessKey: "sim/secret/key/for/tests+0123456789abcd"}

type testEnv struct {
	srv *Server
	ec2 *ec2.Client
	sts *sts.Client
}

// startServer runs a simulator on 127.0.0.1:0 for the test and returns SDK clients
// signed with testCreds (or with the given credentials).
func startServer(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	if cfg.Credentials.AccessKeyID == "" {
		cfg.Credentials = testCreds
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	srv, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("closing simulator: %v", err)
		}
	})
	return &testEnv{srv: srv, ec2: ec2Client(srv, cfg.Credentials, srv.Region()), sts: stsClient(srv, cfg.Credentials)}
}

func awsConfig(creds Credentials, region string) aws.Config {
	return aws.Config{
		Region:           region,
		Credentials:      credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
		RetryMaxAttempts: 1,
	}
}

func ec2Client(srv *Server, creds Credentials, region string, opts ...func(*ec2.Options)) *ec2.Client {
	cfg := awsConfig(creds, region)
	opts = append([]func(*ec2.Options){func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.URL()) }}, opts...)
	return ec2.NewFromConfig(cfg, opts...)
}

func stsClient(srv *Server, creds Credentials) *sts.Client {
	return sts.NewFromConfig(awsConfig(creds, srv.Region()), func(o *sts.Options) { o.BaseEndpoint = aws.String(srv.URL()) })
}

// wantCode asserts err is the EC2 API error code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %s, got %v", code, err)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("want API error %s, got %s: %s", code, ae.ErrorCode(), ae.ErrorMessage())
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
