package driver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"text/template"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// remote runs a short command on the instance and returns its stdout. Nothing secret
// may be in command: Packer logs it.
func (r *run) remote(ctx context.Context, command string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := &packersdk.RemoteCmd{Command: command, Stdout: &stdout, Stderr: &stderr}
	if err := r.cfg.Comm.Start(ctx, cmd); err != nil {
		return "", err
	}
	done := make(chan int, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case status := <-done:
		if status != 0 {
			msg := strings.TrimSpace(stderr.String())
			if msg == "" {
				msg = strings.TrimSpace(stdout.String())
			}
			return stdout.String(), fmt.Errorf("exit status %d: %s", status, msg)
		}
		return stdout.String(), nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(5 * time.Minute):
		return "", fmt.Errorf("no answer after 5 minutes")
	}
}

// quote makes s one shell word.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

var safeDir = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// install makes the agent's private directory and puts the binary in it: sent
// gzip-compressed, unpacked and checked against its SHA-256 on the instance.
func (r *run) install(ctx context.Context, bin *agentBinary) error {
	out, err := r.remote(ctx, "id -u")
	if err != nil {
		return fmt.Errorf("checking the remote user: %w", err)
	}
	r.sudo = strings.TrimSpace(out) != "0"

	out, err = r.remote(ctx, "mktemp -d "+quote(strings.TrimRight(r.cfg.RemoteFolder, "/")+"/instancestore-agent.XXXXXXXXXX"))
	if err != nil {
		return fmt.Errorf("making the agent's directory in remote_folder %s: %w", r.cfg.RemoteFolder, err)
	}
	dir := strings.TrimSpace(out)
	if !safeDir.MatchString(dir) {
		return fmt.Errorf("mktemp on the instance answered %q, not a directory path", dir)
	}
	r.dir = dir // from here on, failure cleanup removes it
	// mktemp -d makes it 0700 already; be explicit for mktemp implementations that don't.
	if _, err := r.remote(ctx, "chmod 700 "+quote(dir)); err != nil {
		return fmt.Errorf("protecting %s: %w", dir, err)
	}

	r.cfg.Ui.Sayf("Uploading the agent (%s, %s compressed) to %s...", bin.source, humanBytes(int64(len(bin.gz))), dir)
	var fi os.FileInfo = fileInfo{name: "agent.gz", size: int64(len(bin.gz))}
	if err := r.cfg.Comm.Upload(dir+"/agent.gz", bytes.NewReader(bin.gz), &fi); err != nil {
		return fmt.Errorf("uploading the agent: %w", err)
	}
	exe := dir + "/instancestore-bundler"
	out, err = r.remote(ctx, fmt.Sprintf("gzip -dc %s > %s && rm -f %s && chmod 700 %s && sha256sum %s",
		quote(dir+"/agent.gz"), quote(exe), quote(dir+"/agent.gz"), quote(exe), quote(exe)))
	if err != nil {
		return fmt.Errorf("unpacking the agent on the instance (needs gzip and sha256sum): %w", err)
	}
	if f := strings.Fields(out); len(f) == 0 || f[0] != bin.sha256 {
		return fmt.Errorf("the agent binary on the instance has another SHA-256 than the one sent (%q): the upload was corrupted", strings.TrimSpace(out))
	}
	return nil
}

// command renders execute_command for program path with args.
func (r *run) command(path, args string) (string, error) {
	t, err := template.New("execute_command").Parse(r.cfg.ExecuteCommand)
	if err != nil {
		return "", fmt.Errorf("execute_command: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, struct {
		Path, Args string
		Sudo       bool
	}{quote(path), args, r.sudo}); err != nil {
		return "", fmt.Errorf("execute_command: %w", err)
	}
	return b.String(), nil
}

// removeDir removes the agent's directory. The SSH user made it and everything in it
// (the agent, running as root, writes nothing there), so a plain rm does; only if that
// fails is execute_command used (a user's broken execute_command must not keep the
// cleanup from working).
func (r *run) removeDir(ctx context.Context) error {
	if r.dir == "" {
		return nil
	}
	if _, err := r.remote(ctx, "rm -rf -- "+quote(r.dir)); err != nil {
		cmd, terr := r.command("rm", "-rf -- "+quote(r.dir))
		if terr != nil {
			return err
		}
		cmd = strings.Replace(cmd, quote("rm"), "rm", 1)
		if _, err := r.remote(ctx, cmd); err != nil {
			return err
		}
	}
	r.dir = ""
	return nil
}

type fileInfo struct {
	name string
	size int64
}

func (f fileInfo) Name() string       { return f.name }
func (f fileInfo) Size() int64        { return f.size }
func (f fileInfo) Mode() os.FileMode  { return 0o600 }
func (f fileInfo) ModTime() time.Time { return time.Now() }
func (f fileInfo) IsDir() bool        { return false }
func (f fileInfo) Sys() any           { return nil }
