// Package driver is the host side of the agent: over any packersdk.Communicator it
// puts the agent binary on the instance, runs it as root, answers its part events with
// presigned S3 URLs, shows progress, then wraps the key, builds, signs and uploads the
// manifest. On failure or cancellation it stops the agent, removes what it put on the
// instance and deletes every object it let the agent upload.
//
// The instance never sees AWS credentials or the user's private key; the AES key, IV
// and URLs travel only over the communicator session's stdin/stdout.
package driver

import (
	"bufio"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// Config is one bundling run.
type Config struct {
	Comm   packersdk.Communicator
	Ui     packersdk.Ui
	Bucket *s3bundle.Bucket

	// Job is what the agent does: Mode, Name, Image or Volume, and the tuning
	// fields. The driver fills in Version, Key, IV and WorkDir.
	Job agent.Request

	// Architecture of the image (x86_64 or i386): the manifest's, and which agent
	// binary runs.
	Architecture string
	// AgentBinary overrides the agent binary: a linux instancestore-bundler.
	AgentBinary string
	// ExecuteCommand runs the agent, and the cleanup, as root. A text/template with
	// .Path (the program), .Args and .Sudo (the remote user is not root). Default
	// DefaultExecuteCommand.
	ExecuteCommand string
	// RemoteFolder is where the agent's private directory is made (default /tmp).
	RemoteFolder string

	Manifest bundle.ManifestConfig // Architecture is taken from Architecture
	// Mappings, when set, is how the new AMI's block device mapping is computed
	// (mappings.go): the manifest's BlockDeviceMappings and Result.Mappings come from
	// it, once the agent has reported the instance's metadata service.
	Mappings *MappingPlan
	// EC2Cert wraps the key for EC2 (default: the embedded certificate of the
	// bucket's region). UserCert and UserKey wrap the key for the user and sign the
	// manifest; both nil means a throw-away pair.
	EC2Cert  *x509.Certificate
	UserCert *x509.Certificate
	UserKey  *rsa.PrivateKey

	// ProgressInterval is how often progress is shown in the UI (default 10s).
	ProgressInterval time.Duration
}

// ErrAgentDidNotStart is in the error of a run whose agent exited before speaking:
// the command that runs it, or its directory, is wrong. The component that owns those
// settings adds their names.
var ErrAgentDidNotStart = errors.New("the agent did not start")

// DefaultExecuteCommand runs the agent as root: directly when the user is root,
// else with non-interactive sudo.
const DefaultExecuteCommand = "{{if .Sudo}}sudo -n {{end}}{{.Path}} {{.Args}}"

// Result is a finished, uploaded bundle.
type Result struct {
	Bundle   *bundle.Result
	Manifest *bundle.Manifest
	// ManifestLocation is bucket/key of the manifest: RegisterImage's ImageLocation.
	ManifestLocation string
	// Objects are the names (under the bucket's prefix) of every object uploaded,
	// manifest last.
	Objects []string
	// Mappings is the new AMI's block device mapping besides the root device (from
	// Config.Mappings; nil without): RegisterImage takes EC2Mappings(Mappings).
	Mappings []Mapping
	// Metadata is what the agent read from the instance's metadata service (nil when
	// it was not asked to).
	Metadata *agent.MetadataReport
	// Key is the bundle's AES key and IV, made on the host: with Manifest it is what
	// Restore needs to write the image onto a volume (the builder's ebs_copy), with no
	// private key involved. A secret: it stays in memory and out of logs.
	Key bundle.Key
}

// Run bundles and uploads. On error nothing it made is left behind (as far as the
// instance and S3 can still be reached; the error says what could not be removed).
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if cfg.Comm == nil || cfg.Bucket == nil || cfg.Ui == nil {
		return nil, errors.New("driver: communicator, UI and bucket are required")
	}
	if cfg.ExecuteCommand == "" {
		cfg.ExecuteCommand = DefaultExecuteCommand
	}
	if cfg.RemoteFolder == "" {
		cfg.RemoteFolder = "/tmp"
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = 10 * time.Second
	}
	if err := bundle.CheckBaseName("bundle name", cfg.Job.Name); err != nil {
		return nil, err
	}
	if cfg.Architecture == "" {
		cfg.Architecture = "x86_64"
	}
	ec2Cert := cfg.EC2Cert
	if ec2Cert == nil {
		if ec2Cert, err = bundle.EC2Certificate(cfg.Bucket.Region); err != nil {
			return nil, err
		}
	}
	userCert, userKey := cfg.UserCert, cfg.UserKey
	if (userCert == nil) != (userKey == nil) {
		return nil, errors.New("the user certificate and private key go together: give both or neither")
	}
	if userCert == nil {
		if userCert, userKey, err = bundle.NewThrowawayUser(); err != nil {
			return nil, err
		}
		cfg.Ui.Say("No X.509 certificate given: the key is wrapped for EC2 and a throw-away certificate, so this bundle cannot be unbundled by you later (set x509_cert_path and x509_key_path to keep that ability)")
	}

	key, err := bundle.NewKey()
	if err != nil {
		return nil, err
	}
	packersdk.LogSecretFilter.Set(key.KeyHex(), key.IVHex())

	bin, err := findAgentBinary(cfg.Architecture, cfg.AgentBinary)
	if err != nil {
		return nil, err
	}
	// Parts of an existing bundle of the same name would be overwritten: its AMI
	// would stop working.
	manifestName := s3bundle.ManifestName(cfg.Job.Name)
	if exists, err := cfg.Bucket.Exists(ctx, manifestName); err != nil {
		return nil, err
	} else if exists {
		return nil, fmt.Errorf("%s/%s already exists: a bundle of that name is there (perhaps of a registered AMI); choose another bundle name or s3 prefix", cfg.Bucket, manifestName)
	}

	r := &run{cfg: cfg, issued: map[string]bool{}}
	defer func() {
		if err != nil {
			err = r.cleanupAfterFailure(err)
		}
	}()

	if err := r.install(ctx, bin); err != nil {
		return nil, err
	}
	job := cfg.Job
	job.Version = agent.ProtocolVersion
	job.Key, job.IV = key.KeyHex(), key.IVHex()
	job.WorkDir = r.dir
	if job.Mode == agent.ModeVolume && job.MetadataURL == "" {
		job.MetadataURL = agent.MetadataURL
	}
	bres, metadata, err := r.runAgent(ctx, bin, &job)
	if err != nil {
		return nil, err
	}
	r.removeDir(ctx) // the agent removed it; this catches an agent that could not

	mcfg := cfg.Manifest
	mcfg.Architecture = cfg.Architecture
	var mappings []Mapping
	if cfg.Mappings != nil {
		mappings = cfg.Mappings.Resolve(metadata, cfg.Ui)
		mcfg.BlockDeviceMappings = ManifestMappings(cfg.Mappings.RootDevice, mappings)
	}
	m, err := bundle.NewManifest(bres, mcfg, key, ec2Cert, userCert)
	if err != nil {
		return nil, fmt.Errorf("building the manifest: %w", err)
	}
	if err := m.Sign(userKey); err != nil {
		return nil, fmt.Errorf("signing the manifest: %w", err)
	}
	// Anything issued but not in the result (a part renamed, a retry under another
	// name) must not stay behind.
	inResult := map[string]bool{}
	for _, p := range bres.Parts {
		inResult[p.Name] = true
	}
	var stray []string
	for n := range r.issued {
		if !inResult[n] {
			stray = append(stray, n)
		}
	}
	if len(stray) > 0 {
		if err := cfg.Bucket.Delete(ctx, stray); err != nil {
			return nil, err
		}
	}
	r.issue(manifestName)
	loc, err := cfg.Bucket.PutManifest(ctx, m)
	if err != nil {
		return nil, err
	}
	objs := make([]string, 0, len(bres.Parts)+1)
	for _, p := range bres.Parts {
		objs = append(objs, p.Name)
	}
	objs = append(objs, manifestName)
	cfg.Ui.Sayf("Bundle uploaded: %d parts, %s, manifest s3://%s", len(bres.Parts), humanBytes(bres.BundledSize), loc)
	return &Result{Bundle: bres, Manifest: m, ManifestLocation: loc, Objects: objs, Mappings: mappings, Metadata: metadata, Key: key}, nil
}

type run struct {
	cfg  Config
	dir  string       // the agent's private directory on the instance
	bin  *agentBinary // set once the agent is started: its sweep runs after a failure
	sudo bool

	mu     sync.Mutex
	issued map[string]bool // objects the agent may have uploaded (URLs handed out)

	exited chan struct{} // closed when the agent's remote command ended

	// answer, when set, answers part events instead of presign (a restore's GETs).
	answer func(ctx context.Context, p *agent.PartEvent) agent.Reply
}

func (r *run) issue(name string) {
	r.mu.Lock()
	r.issued[name] = true
	r.mu.Unlock()
}

// runAgent runs the agent (serveAgent) and returns its bundle and its metadata report.
func (r *run) runAgent(ctx context.Context, bin *agentBinary, job *agent.Request) (*bundle.Result, *agent.MetadataReport, error) {
	res, err := r.serveAgent(ctx, bin, job)
	if err != nil {
		return nil, nil, err
	}
	bres, err := res.BundleResult()
	return bres, res.Metadata, err
}

// serveAgent starts the agent, feeds it the job and serves its events until the result.
func (r *run) serveAgent(ctx context.Context, bin *agentBinary, job *agent.Request) (*agent.ResultEvent, error) {
	r.bin = bin
	command, err := r.command(r.dir+"/instancestore-bundler", bin.args)
	if err != nil {
		return nil, err
	}
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	stderr := &tailBuffer{max: 8 << 10}
	cmd := &packersdk.RemoteCmd{Command: command, Stdin: stdinR, Stdout: stdoutW, Stderr: stderr}
	r.cfg.Ui.Sayf("Running the agent (%s) on the instance...", bin.source)
	if err := r.cfg.Comm.Start(ctx, cmd); err != nil {
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	r.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		stdoutW.Close()
		// A session that died stops reading stdin: unblock writers.
		stdinR.CloseWithError(errSessionEnded)
		close(r.exited)
	}()
	// Stopping: tell the agent, then close its stdin; it removes its files and exits.
	var stopOnce sync.Once
	var wmu sync.Mutex
	enc := json.NewEncoder(stdinW)
	write := func(v any) error {
		wmu.Lock()
		defer wmu.Unlock()
		return enc.Encode(v)
	}
	stop := func() {
		stopOnce.Do(func() {
			go func() { // the pipe may be stuck if the session is gone
				_ = write(agent.Reply{Type: agent.ReplyAbort})
			}()
			time.Sleep(100 * time.Millisecond)
			stdinW.Close()
		})
	}
	defer stop()
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-watchDone:
		}
	}()

	if err := write(job); err != nil {
		return nil, fmt.Errorf("sending the job to the agent: %w", err)
	}

	prog := newProgressUI(r.cfg.Ui, r.cfg.ProgressInterval)
	sc := bufio.NewScanner(stdoutR)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var result *agent.ResultEvent
	var agentErr string
	helloSeen := false
	for sc.Scan() {
		var e agent.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not ours (a login banner, a sudo lecture): show it, it is no secret.
			line := strings.TrimSpace(sc.Text())
			if line != "" {
				r.cfg.Ui.Say("agent: " + line)
			}
			continue
		}
		switch e.Type {
		case agent.EventHello:
			helloSeen = true
			if e.Hello == nil || e.Hello.Version != agent.ProtocolVersion {
				stop()
				return nil, fmt.Errorf("the agent on the instance speaks another protocol version than this plugin: use the agent built with this plugin")
			}
			log.Printf("[INFO] agent %s (%s) on the instance, %d CPUs", e.Hello.Bundler, e.Hello.Arch, e.Hello.CPUs)
		case agent.EventPart:
			reply := r.presign(ctx, e.Part)
			if err := write(reply); err != nil {
				return nil, fmt.Errorf("lost the connection to the agent on the instance (sending an upload URL: %w)", err)
			}
		case agent.EventUploaded:
			prog.uploaded(e.Part)
		case agent.EventProgress:
			prog.update(e.Progress)
		case agent.EventLog:
			r.cfg.Ui.Say("agent: " + e.Message)
		case agent.EventDebug:
			log.Printf("agent: %s", e.Message)
		case agent.EventResult:
			result = e.Result
		case agent.EventError:
			agentErr = e.Message
		}
		if result != nil || agentErr != "" {
			break
		}
	}
	// Wait for the agent to exit (it has nothing more to say), but not forever.
	stdinW.Close()
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	status := -1
	select {
	case <-r.exited:
		status = cmd.ExitStatus()
	default:
	}
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("bundling cancelled: %w", ctx.Err())
	case agentErr != "" && strings.Contains(agentErr, agent.ScratchFullText):
		return nil, fmt.Errorf("the agent on the instance failed: %s; set bundle_destination to a directory with room (an instance store volume, or an EBS volume added with launch_block_device_mappings and mounted there by a provisioner)", agentErr)
	case agentErr != "":
		return nil, fmt.Errorf("the agent on the instance failed: %s", agentErr)
	case result == nil && !helloSeen:
		return nil, fmt.Errorf("%w (exit status %d): %s; the agent must run as root (connect as root, or as a user with sudo without a password), from a directory (%s) that allows executing programs (not mounted noexec)", ErrAgentDidNotStart, status, stderr.String(), r.cfg.RemoteFolder)
	case result == nil:
		// The agent exits 0 only after its result: 0 here means the session ended
		// without an exit status reaching us.
		if status == packersdk.CmdDisconnect || status == -1 || status == 0 {
			return nil, fmt.Errorf("lost the connection to the agent on the instance before the bundle was complete")
		}
		return nil, fmt.Errorf("the agent on the instance stopped before the bundle was complete (exit status %d): %s", status, stderr.String())
	}
	prog.done(result)
	return result, nil
}

var errSessionEnded = errors.New("the remote session ended")

// presign answers a part event with the part's URL, or with an error the agent shows.
func (r *run) presign(ctx context.Context, p *agent.PartEvent) agent.Reply {
	if p == nil {
		return agent.Reply{Type: agent.ReplyURL, Error: "part event without a part"}
	}
	if r.answer != nil {
		return r.answer(ctx, p)
	}
	reply := agent.Reply{Type: agent.ReplyURL, Name: p.Name}
	sum, err := p.MD5Sum()
	if err != nil {
		reply.Error = err.Error()
		return reply
	}
	r.issue(p.Name)
	req, err := r.cfg.Bucket.PresignPart(ctx, p.Name, sum)
	if err != nil {
		reply.Error = err.Error()
		return reply
	}
	hideURL(req.URL)
	reply.Request = req
	return reply
}

// hideURL keeps a presigned URL, and its signature on its own, out of Packer's logs
// and UI.
func hideURL(u string) {
	secrets := []string{u}
	if pu, err := url.Parse(u); err == nil {
		for _, k := range []string{"X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential"} {
			if v := pu.Query().Get(k); v != "" {
				secrets = append(secrets, v, url.QueryEscape(v))
			}
		}
		secrets = append(secrets, pu.RawQuery)
	}
	packersdk.LogSecretFilter.Set(secrets...)
}

// sweep runs the agent's sweep: an agent that was killed (or whose session died)
// may have left mounts, loop devices and scratch behind. Best effort: the next run
// on the instance sweeps too.
func (r *run) sweep(ctx context.Context) {
	exe := r.dir + "/instancestore-bundler"
	// An agent that exited removed itself and undid its own work; one that was
	// killed is still there, and so is what it made.
	if _, err := r.remote(ctx, "test -x "+quote(exe)); err != nil {
		return
	}
	cmd, err := r.command(exe, r.bin.args+" sweep")
	if err != nil {
		return
	}
	out, err := r.remote(ctx, cmd)
	if err != nil {
		r.cfg.Ui.Sayf("Could not sweep the agent's leftovers on the instance: %v", err)
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" {
			r.cfg.Ui.Sayf("Agent: %s", line)
		}
	}
}

// cleanupAfterFailure undoes the run: agent stopped (by runAgent's defer), its
// directory removed, every object it may have uploaded deleted.
func (r *run) cleanupAfterFailure(cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	if r.exited != nil {
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
		}
	}
	if r.dir != "" && r.bin != nil {
		r.sweep(ctx)
	}
	if r.dir != "" {
		if err := r.removeDir(ctx); err != nil {
			errs = append(errs, fmt.Errorf("could not remove %s from the instance: %w", r.dir, err))
		}
	}
	r.mu.Lock()
	names := make([]string, 0, len(r.issued))
	for n := range r.issued {
		names = append(names, n)
	}
	r.mu.Unlock()
	if len(names) > 0 {
		sort.Strings(names)
		r.cfg.Ui.Sayf("Deleting the %d objects uploaded to %s...", len(names), r.cfg.Bucket)
		if err := r.deleteUploads(ctx, names); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w; cleaning up also failed: %w", cause, errors.Join(errs...))
	}
	return cause
}

// deleteUploads deletes the objects whose URLs were handed out, then twice more
// after a pause: a PUT that was in flight when the agent stopped may still land. Only
// those names: a prefix may hold other bundles.
func (r *run) deleteUploads(ctx context.Context, names []string) error {
	b := r.cfg.Bucket
	for i := 0; i < 3; i++ {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		if err := b.Delete(ctx, names); err != nil {
			return fmt.Errorf("deleting uploaded parts from %s: %w", b, err)
		}
	}
	return nil
}

// tailBuffer keeps the last max bytes written (the agent's stderr, for messages).
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.b))
	if s == "" {
		return "no output"
	}
	return s
}
