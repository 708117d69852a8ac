package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// MetadataURL is the instance metadata service the agent reads, as ec2-bundle-vol does,
// the instance's block-device-mapping/ from (Request.MetadataURL).
const MetadataURL = "http://169.254.169.254"

// errNoMetadataService says the metadata service did not answer at all: not on EC2 (a
// null builder's machine), or the service is turned off. Not an error of the run.
var errNoMetadataService = errors.New("no metadata service answered")

// metadataClient talks to the metadata service with short timeouts, as the AWS SDK's
// IMDS client does, and never through a proxy (the service is link-local).
func metadataClient() *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
			ResponseHeaderTimeout: 2 * time.Second,
			DisableKeepAlives:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// metadataAttempts is how often a request that timed out or got a 5xx is sent, as the
// AWS SDK's IMDS client retries (3 attempts): a busy instance can miss one short
// timeout, and a lost read would silently drop ephemeralN from the new AMI.
const metadataAttempts = 3

// doMetadata sends the request that newReq makes, again after a timeout or a 5xx
// answer, with a short backoff. A refused connection is not retried: no service.
func doMetadata(ctx context.Context, c *http.Client, newReq func() (*http.Request, error)) (*http.Response, error) {
	var lastErr error
	for attempt := 1; ; attempt++ {
		req, err := newReq()
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		retry := false
		switch {
		case err == nil && resp.StatusCode < 500:
			return resp, nil
		case err == nil:
			resp.Body.Close()
			lastErr, retry = fmt.Errorf("HTTP %d", resp.StatusCode), true
		default:
			var ne net.Error
			lastErr, retry = err, errors.As(err, &ne) && ne.Timeout()
		}
		if !retry || attempt >= metadataAttempts || ctx.Err() != nil {
			return nil, lastErr
		}
		select {
		case <-ctx.Done():
			return nil, lastErr
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
}

// readBlockDeviceMapping reads meta-data/block-device-mapping/ (virtual name ->
// device: ami, root, ephemeralN, swap) from the metadata service at base. IMDSv2
// first: a session token from PUT /latest/api/token. Like the AWS SDK it goes on
// without a token (IMDSv1) when the PUT gets no answer (a hop limit too low for the
// answer to arrive) or 403, 404 or 405, and stops on 400. errNoMetadataService when
// nothing answers.
func readBlockDeviceMapping(ctx context.Context, base string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := metadataClient()
	base = strings.TrimRight(base, "/")
	token, answered, err := metadataToken(ctx, c, base)
	if err != nil {
		return nil, err
	}
	get := func(path string) (string, int, error) {
		resp, err := doMetadata(ctx, c, func() (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/latest/meta-data/"+path, nil)
			if err == nil && token != "" {
				req.Header.Set("X-aws-ec2-metadata-token", token)
			}
			return req, err
		})
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return "", resp.StatusCode, err
		}
		return strings.TrimSpace(string(b)), resp.StatusCode, nil
	}
	listing, status, err := get("block-device-mapping/")
	switch {
	case err != nil && !answered:
		return nil, fmt.Errorf("%w at %s (%v)", errNoMetadataService, base, err)
	case err != nil:
		return nil, fmt.Errorf("reading block-device-mapping/ from the metadata service: %w", err)
	case status == http.StatusUnauthorized:
		return nil, fmt.Errorf("the metadata service requires a session token (IMDSv2), and none arrived: is the instance's HttpPutResponseHopLimit too low?")
	case status == http.StatusNotFound:
		return map[string]string{}, nil
	case status != http.StatusOK:
		return nil, fmt.Errorf("reading block-device-mapping/ from the metadata service: HTTP %d", status)
	}
	out := map[string]string{}
	names := strings.Fields(listing)
	sort.Strings(names)
	for _, name := range names {
		if strings.ContainsAny(name, "/=") {
			continue
		}
		dev, status, err := get("block-device-mapping/" + name)
		if err != nil {
			return nil, fmt.Errorf("reading block-device-mapping/%s from the metadata service: %w", name, err)
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("reading block-device-mapping/%s from the metadata service: HTTP %d", name, status)
		}
		out[name] = dev
	}
	return out, nil
}

// metadataToken asks for an IMDSv2 session token. answered says whether the service
// answered the PUT at all; "" with a nil error means go on with IMDSv1.
func metadataToken(ctx context.Context, c *http.Client, base string) (token string, answered bool, err error) {
	resp, err := doMetadata(ctx, c, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
		if err == nil {
			req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
		}
		return req, err
	})
	if err != nil {
		return "", false, nil
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	switch {
	case resp.StatusCode == http.StatusOK && rerr == nil:
		return strings.TrimSpace(string(b)), true, nil
	case resp.StatusCode == http.StatusBadRequest:
		return "", true, fmt.Errorf("the metadata service refused the session token request (HTTP 400)")
	}
	return "", true, nil
}

// instanceMetadata is what the agent reports of the metadata service in its result.
func instanceMetadata(ctx context.Context, base string) *MetadataReport {
	if base == "" {
		return nil
	}
	m, err := readBlockDeviceMapping(ctx, base)
	if err != nil {
		return &MetadataReport{Note: err.Error()}
	}
	return &MetadataReport{Read: true, BlockDeviceMapping: m}
}
