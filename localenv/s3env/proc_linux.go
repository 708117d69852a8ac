package s3env

import (
	"os/exec"
	"syscall"
)

// dieWithParent kills the child when the test process dies, so that no server outlives
// a crashed run.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
