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
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
			ResponseHeaderTimeout: time.Second,
			DisableKeepAlives:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// readBlockDeviceMapping reads meta-data/block-device-mapping/ (virtual name ->
// device: ami, root, ephemeralN, swap) from the metadata service at base. IMDSv2
// first: a session token from PUT /latest/api/token. Like the AWS SDK it goes on
// without a token (IMDSv1) when the PUT gets no answer (a hop limit too low for the
// answer to arrive) or 403, 404 or 405, and stops on 400. errNoMetadataService when
// nothing answers.
func readBlockDeviceMapping(ctx context.Context, base string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	c := metadataClient()
	base = strings.TrimRight(base, "/")
	token, answered, err := metadataToken(ctx, c, base)
	if err != nil {
		return nil, err
	}
	get := func(path string) (string, int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/latest/meta-data/"+path, nil)
		if err != nil {
			return "", 0, err
		}
		if token != "" {
			req.Header.Set("X-aws-ec2-metadata-token", token)
		}
		resp, err := c.Do(req)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	if err != nil {
		return "", false, err
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
	resp, err := c.Do(req)
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
