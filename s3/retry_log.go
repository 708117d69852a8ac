package s3bundle

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// loggingRetryer logs every retry the SDK makes of an S3 request: the operation, the
// status and error code that caused it, and the delay before the next attempt
// (PACKER_LOG=1 shows the plugin's log). Errors of S3 carry no credentials.
type loggingRetryer struct{ aws.Retryer }

func (r loggingRetryer) RetryDelay(attempt int, opErr error) (time.Duration, error) {
	d, err := r.Retryer.RetryDelay(attempt, opErr)
	if err != nil {
		log.Printf("[WARN] s3: %s attempt %d failed (%s), no retry: %v", operation(opErr), attempt, cause(opErr), err)
		return d, err
	}
	log.Printf("[WARN] s3: %s attempt %d failed (%s); retrying in %s", operation(opErr), attempt, cause(opErr), d.Round(time.Millisecond))
	return d, nil
}

// GetAttemptToken keeps the wrapped retryer's rate limiting (aws.RetryerV2).
func (r loggingRetryer) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := r.Retryer.(aws.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return r.Retryer.GetInitialToken(), nil
}

func operation(err error) string {
	var oe *smithy.OperationError
	if errors.As(err, &oe) {
		return oe.Service() + " " + oe.Operation()
	}
	return "S3 request" // the SDK wraps the operation name around the error only after the retries
}

// cause is "status 503, SlowDown" or the error's text when no answer came.
func cause(err error) string {
	s := ""
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		s = fmt.Sprintf("status %d", re.Response.StatusCode)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if s != "" {
			s += ", "
		}
		s += ae.ErrorCode()
	}
	if s == "" {
		var oe *smithy.OperationError
		if errors.As(err, &oe) {
			return oe.Err.Error()
		}
		return err.Error()
	}
	return s
}
