package driver

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	agentbin "github.com/instancestore/packer-plugin-instancestore/agent/bin"
)

// agentBinary is what goes to the instance: the gzip stream sent on the wire, the
// SHA-256 of the uncompressed binary (checked on the instance), and the arguments
// that make the binary run as the agent.
type agentBinary struct {
	gz     []byte
	sha256 string
	args   string
	source string // for messages
}

// GoArch maps an EC2 architecture to the GOARCH of the agent binary.
func GoArch(arch string) (string, error) {
	switch arch {
	case "", "x86_64", "amd64":
		return "amd64", nil
	case "i386", "386":
		return "386", nil
	}
	return "", fmt.Errorf("architecture %q has no agent binary: instance-store AMIs are x86_64 or i386", arch)
}

// findAgentBinary picks the agent for arch, in order: the override path, the binary
// embedded in the plugin, the plugin's own executable (linux hosts of the same
// architecture, when the plugin's main called agent.RunIfAgent).
func findAgentBinary(arch, override string) (*agentBinary, error) {
	goarch, err := GoArch(arch)
	if err != nil {
		return nil, err
	}
	if override != "" {
		b, err := os.ReadFile(override)
		if err != nil {
			return nil, fmt.Errorf("agent_binary: %w", err)
		}
		if len(b) < 4 || string(b[:4]) != "\x7fELF" {
			return nil, fmt.Errorf("agent_binary %s is not a Linux (ELF) executable: build it with GOOS=linux GOARCH=%s go build ./cmd/instancestore-bundler", override, goarch)
		}
		if err := checkStatic(b, goarch, "agent_binary "+override); err != nil {
			return nil, err
		}
		return compress(b, "agent", override)
	}
	if gz, ok := agentbin.Gzipped(goarch); ok {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			return nil, fmt.Errorf("embedded agent for linux/%s is corrupt: %w", goarch, err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("embedded agent for linux/%s is corrupt: %w", goarch, err)
		}
		if err := checkStatic(b, goarch, "the embedded linux/"+goarch+" agent"); err != nil {
			return nil, err
		}
		h := sha256.Sum256(b)
		return &agentBinary{gz: gz, sha256: hex.EncodeToString(h[:]), args: "agent", source: "embedded linux/" + goarch + " agent"}, nil
	}
	if runtime.GOOS == "linux" && runtime.GOARCH == goarch && agent.SelfServes() {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the plugin executable to use as the agent: %w", err)
		}
		b, err := os.ReadFile(exe)
		if err != nil {
			return nil, fmt.Errorf("reading the plugin executable to use as the agent: %w", err)
		}
		return compress(b, agent.PluginArg, "plugin executable")
	}
	return nil, fmt.Errorf("this plugin build carries no linux/%s agent (a plain `go build` embeds none, and the plugin can serve as the agent only on a linux/%s host): "+
		"use a release build, run `go generate ./agent/bin` before building the plugin, or set agent_binary to a linux/%s instancestore-bundler", goarch, goarch, goarch)
}

func compress(b []byte, args, source string) (*agentBinary, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return &agentBinary{gz: buf.Bytes(), sha256: hex.EncodeToString(sum[:]), args: args, source: source}, nil
}
