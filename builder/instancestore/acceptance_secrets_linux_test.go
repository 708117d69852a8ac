//go:build linux

package instancestore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkNoSecrets fails when a secret of the build (the ones given, the environment's
// secret access key and session token, presigned URLs' signatures and credentials)
// shows in the Packer log, in Packer's output or on a command line sampled during the
// build (the agent's included: the local instances are processes of this host).
func (a *accEnv) checkNoSecrets(t *testing.T, outDir, out string, seenCmdlines []string, secrets map[string]string) {
	t.Helper()
	logText := readFile(t, filepath.Join(outDir, "packer.log"))
	all := map[string]string{
		"AWS secret key":   a.vars["AWS_SECRET_ACCESS_KEY"],
		"X-Amz-Signature":  "X-Amz-Signature=",
		"X-Amz-Credential": "X-Amz-Credential=",
	}
	if tok := a.vars["AWS_SESSION_TOKEN"]; tok != "" {
		all["AWS session token"] = tok
	}
	for k, v := range secrets {
		all[k] = v
	}
	sawAgent := false
	for _, c := range seenCmdlines {
		if strings.Contains(c, "/instancestore-agent.") {
			sawAgent = true
		}
	}
	if !sawAgent || len(seenCmdlines) < 10 {
		t.Fatalf("the command-line sampler saw %d lines and no agent: it proves nothing", len(seenCmdlines))
	}
	if !strings.Contains(logText, "instancestore") {
		t.Fatal("the Packer log is empty: PACKER_LOG capture is broken")
	}
	for what, s := range all {
		if s == "" {
			t.Fatalf("secret %s is empty: the check proves nothing", what)
		}
		if strings.Contains(logText, s) {
			t.Errorf("%s in the Packer log", what)
		}
		if strings.Contains(out, s) {
			t.Errorf("%s in the Packer output", what)
		}
		for _, c := range seenCmdlines {
			// The local environment's own servers get credentials by design.
			if strings.Contains(c, s) && !strings.Contains(c, "minio") {
				t.Errorf("%s on a command line: %.200q", what, c)
			}
		}
	}
}
