package ec2sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// tamper adds a finalize middleware that runs after SigV4 signing and edits the request.
func tamper(edit func(r *smithyhttp.Request)) func(*ec2.Options) {
	return func(o *ec2.Options) {
		o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
			return s.Finalize.Add(middleware.FinalizeMiddlewareFunc("tamper", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				edit(in.Request.(*smithyhttp.Request))
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
		})
	}
}

func replaceBody(r *smithyhttp.Request, from, to string) {
	b, _ := io.ReadAll(r.GetStream())
	nb := strings.Replace(string(b), from, to, 1)
	nr, err := r.SetStream(bytes.NewReader([]byte(nb)))
	if err != nil {
		panic(err)
	}
	nr.ContentLength = int64(len(nb))
	*r = *nr
}

func TestSigV4(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	seedDirImage(t, e.srv, "base", "paravirtual")
	in := &ec2.DescribeImagesInput{Owners: []string{"amazon"}}
	if _, err := e.ec2.DescribeImages(ctx, in); err != nil {
		t.Fatalf("good signature rejected: %v", err)
	}

	wrongSecret := ec2Client(e.srv, Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: "not-the-secret"}, "us-east-1")
	_, err := wrongSecret.DescribeImages(ctx, in)
	wantCode(t, err, "AuthFailure")

	unknownKey := ec2Client(e.srv, Credentials{AccessKeyID: "AKIDNOTKNOWN", SecretAccessKey: testCreds.SecretAccessKey}, "us-east-1")
	_, err = unknownKey.DescribeImages(ctx, in)
	wantCode(t, err, "AuthFailure")

	// Body altered after signing (Owner amazon -> self): the signature no longer covers it.
	tampered := ec2Client(e.srv, testCreds, "us-east-1", tamper(func(r *smithyhttp.Request) { replaceBody(r, "Owner.1=amazon", "Owner.1=selff") }))
	_, err = tampered.DescribeImages(ctx, in)
	wantCode(t, err, "AuthFailure")

	// A signed header altered after signing.
	hdr := ec2Client(e.srv, testCreds, "us-east-1", tamper(func(r *smithyhttp.Request) {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=latin1")
	}))
	_, err = hdr.DescribeImages(ctx, in)
	wantCode(t, err, "AuthFailure")

	// With a signed x-amz-content-sha256 header, a changed body is SignatureDoesNotMatch.
	withHash := ec2Client(e.srv, testCreds, "us-east-1", func(o *ec2.Options) {
		o.APIOptions = append(o.APIOptions, v4.AddContentSHA256HeaderMiddleware)
	})
	if _, err := withHash.DescribeImages(ctx, in); err != nil {
		t.Fatalf("request with x-amz-content-sha256 rejected: %v", err)
	}
	withHashTampered := ec2Client(e.srv, testCreds, "us-east-1", func(o *ec2.Options) {
		o.APIOptions = append(o.APIOptions, v4.AddContentSHA256HeaderMiddleware)
	}, tamper(func(r *smithyhttp.Request) { replaceBody(r, "Owner.1=amazon", "Owner.1=selff") }))
	_, err = withHashTampered.DescribeImages(ctx, in)
	wantCode(t, err, "SignatureDoesNotMatch")

	// A clock 20 minutes off.
	skewed := ec2Client(e.srv, testCreds, "us-east-1")
	e.srv.cfg.Now = func() time.Time { return time.Now().Add(20 * time.Minute) }
	_, err = skewed.DescribeImages(ctx, in)
	e.srv.cfg.Now = time.Now
	wantCode(t, err, "RequestExpired")
}

func TestSigV4SessionToken(t *testing.T) {
	creds := Credentials{AccessKeyID: "ASIASIMTEST", SecretAccessKey: "tmp-secret", SessionToken: "the-session-token"}
	e := startServer(t, Config{Credentials: creds})
	ctx := ctxT(t)
	if _, err := e.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
		t.Fatalf("with session token: %v", err)
	}
	noToken := ec2Client(e.srv, Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}, "us-east-1")
	_, err := noToken.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	wantCode(t, err, "AuthFailure")
	wrongToken := ec2Client(e.srv, Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey, SessionToken: "other"}, "us-east-1")
	_, err = wrongToken.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	wantCode(t, err, "AuthFailure")
	if _, err := e.sts.GetCallerIdentity(ctx, nil); err != nil {
		t.Fatalf("sts with session token: %v", err)
	}
}

// TestSigV4QueryGET signs a GET request with the Query parameters in the URL (the other
// form of the Query protocol), with the SDK's signer.
func TestSigV4QueryGET(t *testing.T) {
	e := startServer(t, Config{})
	signer := v4.NewSigner()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL()+"/?Action=DescribeAvailabilityZones&Version=2016-11-15&ZoneName.1=us-east-1b", nil)
	empty := sha256.Sum256(nil)
	creds := aws.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}
	if err := signer.SignHTTP(context.Background(), creds, req, hex.EncodeToString(empty[:]), "ec2", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "<zoneName>us-east-1b</zoneName>") || strings.Contains(string(body), "us-east-1a") ||
		!strings.Contains(string(body), `xmlns="`+EC2Namespace+`"`) || !strings.Contains(string(body), "<DescribeAvailabilityZonesResponse") {
		t.Fatalf("GET: HTTP %d %s", resp.StatusCode, body)
	}
	// The same URL with one parameter changed after signing.
	req.URL.RawQuery = strings.Replace(req.URL.RawQuery, "us-east-1b", "us-east-1c", 1)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), "<Code>AuthFailure</Code>") || !strings.Contains(string(body), "<RequestID>") {
		t.Fatalf("tampered GET: HTTP %d %s", resp.StatusCode, body)
	}
}

// TestSigV4Presigned: a presigned GET (signature in the query) works, and the same
// URL with a parameter changed does not.
func TestSigV4Presigned(t *testing.T) {
	e := startServer(t, Config{})
	signer := v4.NewSigner()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL()+"/?Action=DescribeRegions&Version=2016-11-15&RegionName.1=eu-west-1", nil)
	creds := aws.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}
	u, _, err := signer.PresignHTTP(context.Background(), creds, req, "UNSIGNED-PAYLOAD", "ec2", "us-east-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	get := func(u string) (int, string) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(u); code != 200 || !strings.Contains(body, "<regionName>eu-west-1</regionName>") {
		t.Fatalf("presigned GET: %d %s", code, body)
	}
	if code, body := get(strings.Replace(u, "eu-west-1", "eu-west-2", 1)); code != 401 || !strings.Contains(body, "AuthFailure") {
		t.Fatalf("tampered presigned GET: %d %s", code, body)
	}
}
