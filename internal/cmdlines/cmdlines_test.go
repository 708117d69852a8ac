package cmdlines

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestSampleSeesAChildProcess(t *testing.T) {
	s := Sample()
	cmd := exec.Command("sleep", "0.5")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	for _, l := range s.Stop() {
		if strings.TrimSpace(l) == "sleep 0.5" {
			return
		}
	}
	t.Fatal("the sampler never saw `sleep 0.5`")
}
