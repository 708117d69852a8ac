package driver

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// RestoreConfig is one run of the agent that writes an existing bundle onto a block
// device of the instance (an attached EBS volume).
type RestoreConfig struct {
	Comm packersdk.Communicator
	Ui   packersdk.Ui
	// Bucket is where the bundle is: the manifest's bucket and prefix. The driver
	// presigns a GET of each part when the agent asks; nothing is written there.
	Bucket *s3bundle.Bucket
	// ManifestXML is the bundle's manifest as stored; Key its AES key and IV,
	// unwrapped by the caller with the user's private key (UnwrapManifestKey).
	ManifestXML []byte
	Key         bundle.Key
	// Device is the target on the instance (/dev/xvdf, /dev/nvme1n1); or, when it is
	// empty, the agent finds the device of the EBS volume VolumeID attached as
	// AttachName.
	Device, VolumeID, AttachName string

	Architecture     string // of the agent binary to run: x86_64 (default) or i386
	AgentBinary      string
	ExecuteCommand   string
	RemoteFolder     string
	ProgressInterval time.Duration
}

// UnwrapManifestKey unwraps the bundle key of m with the user's private key, with
// the error a user can act on when it is the wrong key.
func UnwrapManifestKey(m *bundle.Manifest, priv *rsa.PrivateKey) (bundle.Key, error) {
	k, err := bundle.UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	if err != nil {
		return bundle.Key{}, fmt.Errorf("this key does not unwrap the manifest's user key (%v): give the private key of the X.509 certificate the bundle was made with", err)
	}
	return k, nil
}

// Restore runs the agent in restore mode and returns what it wrote. The key travels
// only in the request on the agent's stdin. On error the agent is stopped and its
// directory removed; the bundle is never touched.
func Restore(ctx context.Context, cfg RestoreConfig) (res *agent.RestoreResult, err error) {
	if cfg.Comm == nil || cfg.Bucket == nil || cfg.Ui == nil {
		return nil, errors.New("driver: communicator, UI and bucket are required")
	}
	m, err := bundle.ParseManifest(cfg.ManifestXML)
	if err != nil {
		return nil, err
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
	if cfg.Architecture == "" {
		cfg.Architecture = "x86_64"
	}
	packersdk.LogSecretFilter.Set(cfg.Key.KeyHex(), cfg.Key.IVHex())
	bin, err := findAgentBinary(cfg.Architecture, cfg.AgentBinary)
	if err != nil {
		return nil, err
	}
	parts := map[string]bool{}
	for _, p := range m.Parts {
		parts[p.Filename] = true
	}
	r := &run{
		cfg:    Config{Comm: cfg.Comm, Ui: cfg.Ui, Bucket: cfg.Bucket, ExecuteCommand: cfg.ExecuteCommand, RemoteFolder: cfg.RemoteFolder, ProgressInterval: cfg.ProgressInterval},
		issued: map[string]bool{}, // stays empty: nothing is uploaded, nothing deleted
		answer: func(ctx context.Context, p *agent.PartEvent) agent.Reply {
			reply := agent.Reply{Type: agent.ReplyURL, Name: p.Name}
			if !parts[p.Name] {
				reply.Error = fmt.Sprintf("%s is not a part of the bundle", p.Name)
				return reply
			}
			req, err := cfg.Bucket.PresignGetPart(ctx, p.Name)
			if err != nil {
				reply.Error = err.Error()
				return reply
			}
			hideURL(req.URL)
			reply.Request = req
			return reply
		},
	}
	defer func() {
		if err != nil {
			err = r.cleanupAfterFailure(err)
		}
	}()
	if err := r.install(ctx, bin); err != nil {
		return nil, err
	}
	job := agent.Request{
		Version: agent.ProtocolVersion, Mode: agent.ModeRestore, Name: m.Name,
		Key: cfg.Key.KeyHex(), IV: cfg.Key.IVHex(), WorkDir: r.dir,
		Restore: &agent.RestoreRequest{Manifest: string(cfg.ManifestXML), Device: cfg.Device, VolumeID: cfg.VolumeID, AttachName: cfg.AttachName},
	}
	ev, err := r.serveAgent(ctx, bin, &job)
	if err != nil {
		return nil, err
	}
	r.removeDir(ctx)
	if ev.Restore == nil {
		return nil, errors.New("the agent on the instance sent a result without the restore")
	}
	cfg.Ui.Sayf("Wrote image %s onto %s: %s of data, every part and the image digest checked", m.Name, ev.Restore.Device, humanBytes(ev.Restore.Written))
	return ev.Restore, nil
}
