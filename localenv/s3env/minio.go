package s3env

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// MinIOBinary returns the path of the pinned MinIO server, building it with
// scripts/build-minio.sh when missing or stale (about 4 minutes the first time; `make
// deps` does it ahead). $INSTANCESTORE_MINIO names a prebuilt binary instead.
func MinIOBinary(ctx context.Context) (string, error) {
	if p := os.Getenv("INSTANCESTORE_MINIO"); p != "" {
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts/build-minio.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building MinIO with scripts/build-minio.sh: %w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// repoRoot finds the checkout from this source file's location, or from the working
// directory upwards.
func repoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "scripts/build-minio.sh")); err == nil {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("cannot find scripts/build-minio.sh: run from the checkout or set INSTANCESTORE_MINIO to a MinIO binary")
}

// StartMinIO runs MinIO on 127.0.0.1 with its data in dir and creds as root
// credentials (zero creds: random ones, in Backend.Credentials). The credentials go
// to MinIO through its environment, never its command line. Close stops it.
func StartMinIO(ctx context.Context, dir string, creds Credentials) (*Backend, error) {
	bin, err := MinIOBinary(ctx)
	if err != nil {
		return nil, err
	}
	if creds.AccessKeyID == "" {
		creds = Credentials{AccessKeyID: "AKIA" + strings.ToUpper(randomHex(16)), SecretAccessKey: randomHex(40)}
	}
	if len(creds.AccessKeyID) < 3 || len(creds.SecretAccessKey) < 8 {
		return nil, errors.New("MinIO needs an access key of 3+ characters and a secret key of 8+")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("MinIO data directory: %w", err)
	}
	var lastErr error
	// The ports are picked free and handed to MinIO, so another process may take one
	// in between: try again with new ones.
	for range 5 {
		b, err := startMinIO(ctx, bin, dir, creds)
		if err == nil {
			return b, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startMinIO(ctx context.Context, bin, dir string, creds Credentials) (*Backend, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr,
		"--console-address", fmt.Sprintf("127.0.0.1:%d", console), dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+creds.AccessKeyID,
		"MINIO_ROOT_PASSWORD="+creds.SecretAccessKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CALLHOME_ENABLE=off",
		// No MINIO_REGION: MinIO then accepts signatures and buckets for every
		// region, and the Front keeps and enforces each bucket's region.
	)
	log := &tailBuffer{max: 32 << 10}
	cmd.Stdout, cmd.Stderr = log, log
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting MinIO: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() error {
		select {
		case <-exited:
			return nil
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		return nil
	}
	url := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	// The health endpoint answers before the object layer is up ("Server not
	// initialized yet"): wait until an authenticated ListBuckets works.
	client := NewClient(url, creds, "us-east-1")
	var lastErr error
	for {
		probe, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, lastErr = client.ListBuckets(probe, &s3.ListBucketsInput{})
		cancel()
		if lastErr == nil {
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("MinIO exited at start: %s", log.String())
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("MinIO did not become ready on %s in 60s (last error: %v): %s", addr, lastErr, log.String())
		}
	}
	return &Backend{
		Kind:             "minio",
		URL:              url,
		Credentials:      creds,
		Region:           "us-east-1",
		ChecksSignatures: true,
		stop:             stop,
	}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
