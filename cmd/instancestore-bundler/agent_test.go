package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestAgentCommandUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"agent", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "JSON request on stdin") {
		t.Fatalf("agent --help: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"agent", "extra"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "no arguments") {
		t.Fatalf("agent extra: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	run(nil, &out, &errb)
	if !strings.Contains(errb.String(), "agent") {
		t.Fatalf("usage does not list the agent command: %q", errb.String())
	}
}
