package agent

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
	"github.com/instancestore/packer-plugin-instancestore/version"
)

// Main runs the agent on the process's stdin and stdout and returns the exit status.
// It is what `instancestore-bundler agent` and the plugin binary invoked with
// PluginArg run. SIGINT, SIGTERM, SIGHUP and SIGPIPE stop the run cleanly.
func Main(args []string) int {
	if len(args) == 1 && args[0] == "sweep" {
		// What a killed run left (see StateDir); the host runs it after a failure.
		for _, msg := range Sweep(StateDir) {
			fmt.Println(msg)
		}
		return 0
	}
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "instancestore-bundler agent takes no arguments but sweep: the Packer plugin drives it over stdin and stdout\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer stop()
	forwardLog = true
	if err := Run(ctx, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "instancestore-bundler agent: %s\n", err)
		return 1
	}
	return 0
}

// Run reads the request from in, bundles and uploads, and writes events to out. The
// returned error has been sent as an EventError too (when out still works).
func Run(ctx context.Context, in io.Reader, out io.Writer) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a := &agent{enc: json.NewEncoder(out), waiting: map[string]chan Reply{}}
	if forwardLog {
		// The agent's process log (retries, URLs, S3 answers) goes to the host's log.
		log.SetFlags(0)
		log.SetOutput(debugWriter{a})
		defer log.SetOutput(os.Stderr)
	}
	a.send(Event{Type: EventHello, Hello: &Hello{Version: ProtocolVersion, Bundler: version.PluginVersion.FormattedVersion(), Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}})

	br := bufio.NewReaderSize(in, 64<<10)
	line, rerr := br.ReadBytes('\n')
	if rerr != nil && len(line) == 0 {
		return fmt.Errorf("reading the request on stdin: %w", rerr)
	}
	req, derr := DecodeRequest(line)
	if req == nil {
		return a.fail(derr)
	}
	defer func() {
		if req.WorkDir != "" {
			// The binary may be running from here: Linux lets it delete itself.
			if rmErr := os.RemoveAll(req.WorkDir); rmErr != nil && err == nil {
				err = a.fail(fmt.Errorf("removing the work directory: %w", rmErr))
			}
		}
	}()
	if derr != nil {
		return a.fail(derr)
	}

	// Replies arrive while the bundle streams. EOF before the result means the host
	// is gone: stop everything.
	go func() {
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				var r Reply
				if jerr := json.Unmarshal(line, &r); jerr != nil {
					cancel(fmt.Errorf("malformed reply from the host: %w", jerr))
					return
				}
				if r.Type == ReplyAbort {
					cancel(errors.New("aborted by the host"))
					return
				}
				a.deliver(r)
			}
			if err != nil {
				cancel(errors.New("the host closed the connection"))
				return
			}
		}
	}()

	if req.Mode == ModeRestore {
		rres, err := a.restore(ctx, req)
		if err != nil {
			if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
				err = fmt.Errorf("%w (%v)", err, c)
			}
			return a.fail(err)
		}
		a.send(Event{Type: EventResult, Result: &ResultEvent{Restore: rres}})
		return nil
	}
	// The metadata service is read beside the bundling: it costs no time.
	metadata := make(chan *MetadataReport, 1)
	go func() { metadata <- instanceMetadata(ctx, req.MetadataURL) }()
	res, err := a.run(ctx, req)
	if err != nil {
		if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, c)
		}
		return a.fail(err)
	}
	result := resultEvent(res)
	result.Metadata = <-metadata
	a.send(Event{Type: EventResult, Result: result})
	return nil
}

type agent struct {
	mu  sync.Mutex
	enc *json.Encoder

	wmu     sync.Mutex
	waiting map[string]chan Reply

	// progress, updated by the writer and the sink
	phase         atomic.Value // string
	read, total   atomic.Int64
	uploadedBytes atomic.Int64
	uploadedParts atomic.Int64
}

func (a *agent) send(e Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = a.enc.Encode(e) // a broken stdout shows up as a closed stdin too
}

// forwardLog is set by Main: in the agent's own process, the standard log is sent to
// the host as EventDebug lines (the host logs them; PACKER_LOG=1 shows them).
var forwardLog bool

type debugWriter struct{ a *agent }

func (w debugWriter) Write(p []byte) (int, error) {
	w.a.send(Event{Type: EventDebug, Message: strings.TrimRight(string(p), "\n")})
	return len(p), nil
}

func (a *agent) fail(err error) error {
	a.send(Event{Type: EventError, Message: err.Error()})
	return err
}

func (a *agent) log(format string, args ...any) {
	a.send(Event{Type: EventLog, Message: fmt.Sprintf(format, args...)})
}

func (a *agent) deliver(r Reply) {
	a.wmu.Lock()
	ch := a.waiting[r.Name]
	delete(a.waiting, r.Name)
	a.wmu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// presign asks the host for the URL of part p and waits for the reply.
func (a *agent) presign(ctx context.Context, p *bundle.Part, fresh bool) (*presigned.Request, error) {
	ch := make(chan Reply, 1)
	a.wmu.Lock()
	a.waiting[p.Name] = ch
	a.wmu.Unlock()
	a.send(Event{Type: EventPart, Part: &PartEvent{Index: p.Index, Name: p.Name, Size: int64(len(p.Data)),
		SHA1: hex.EncodeToString(p.SHA1[:]), MD5: hex.EncodeToString(p.MD5[:]), Fresh: fresh}})
	select {
	case r := <-ch:
		if r.Error != "" {
			return nil, errors.New(r.Error)
		}
		if r.Request == nil {
			return nil, errors.New("the host sent no URL")
		}
		return r.Request, nil
	case <-ctx.Done():
		a.wmu.Lock()
		delete(a.waiting, p.Name)
		a.wmu.Unlock()
		return nil, ctx.Err()
	}
}

func (a *agent) run(ctx context.Context, req *Request) (*bundle.Result, error) {
	key, _ := req.BundleKey()
	interval := time.Duration(req.ProgressMillis) * time.Millisecond
	if interval <= 0 {
		interval = time.Second
	}
	stopProgress := a.reportProgress(interval)
	defer stopProgress()

	var img *bundle.Image
	switch req.Mode {
	case ModeImage:
		a.phase.Store("bundling")
		var err error
		if img, err = bundle.OpenImage(req.Image); err != nil {
			return nil, fmt.Errorf("opening image: %w", err)
		}
	case ModeVolume:
		a.phase.Store("imaging")
		// Sweep what a killed run left, and mark this one (see StateDir).
		vreq, release, err := markRun(ctx, req, a.log)
		if err != nil {
			return nil, err
		}
		defer release()
		vimg, err := buildVolumeImage(ctx, vreq, a.log)
		if err != nil {
			return nil, err
		}
		defer vimg.Remove()
		path := vimg.Path
		a.phase.Store("bundling")
		if img, err = bundle.OpenImage(path); err != nil {
			return nil, fmt.Errorf("opening the volume image: %w", err)
		}
	}
	defer img.Close()

	cfg := presigned.Config{
		Presign:      a.presign,
		Concurrency:  req.Concurrency,
		StallTimeout: time.Duration(req.StallSeconds) * time.Second,
		Uploaded: func(p *bundle.Part) {
			a.uploadedBytes.Add(int64(len(p.Data)))
			a.uploadedParts.Add(1)
			a.send(Event{Type: EventUploaded, Part: &PartEvent{Index: p.Index, Name: p.Name, Size: int64(len(p.Data))}})
		},
		Retrying: func(p *bundle.Part, attempt int, err error) {
			a.log("retrying upload of %s (attempt %d): %v", p.Name, attempt+1, err)
		},
	}
	if req.Attempts > 0 {
		cfg.Retry = presigned.DefaultRetry
		cfg.Retry.Attempts = req.Attempts
	}
	sink := presigned.NewSink(ctx, cfg)
	res, err := bundle.Write(ctx, img, bundle.WriterConfig{
		Name: req.Name, Key: key, Level: req.CompressionLevel, Concurrency: req.GzipWorkers,
		Progress: func(p bundle.Progress) {
			a.read.Store(p.BytesRead)
			a.total.Store(p.BytesTotal)
		},
	}, sink)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// reportProgress sends a progress event every interval until the returned func is
// called. The rate is the upload rate over the last few intervals.
func (a *agent) reportProgress(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		type sample struct {
			at time.Time
			n  int64
		}
		window := []sample{{time.Now(), 0}}
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				up := a.uploadedBytes.Load()
				window = append(window, sample{now, up})
				if len(window) > 10 {
					window = window[1:]
				}
				first := window[0]
				rate := 0.0
				if d := now.Sub(first.at).Seconds(); d > 0 {
					rate = float64(up-first.n) / d
				}
				phase, _ := a.phase.Load().(string)
				a.send(Event{Type: EventProgress, Progress: &ProgressEvent{Phase: phase,
					BytesRead: a.read.Load(), BytesTotal: a.total.Load(),
					BytesUploaded: up, PartsUploaded: int(a.uploadedParts.Load()), Rate: rate}})
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
