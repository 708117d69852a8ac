package agent

import (
	"os"
	"sync/atomic"
)

var selfServes atomic.Bool

// RunIfAgent lets a program (the Packer plugin) double as the agent. Call it first
// thing in main: when the process was started with PluginArg as its first argument it
// runs the agent and exits; otherwise it records that this executable can serve as the
// agent (see SelfServes) and returns. That makes a plain `go build` of the plugin on
// linux/amd64 work without embedded agent binaries: the driver uploads the plugin
// executable itself.
func RunIfAgent() {
	if len(os.Args) > 1 && os.Args[1] == PluginArg {
		os.Exit(Main(os.Args[2:]))
	}
	selfServes.Store(true)
}

// SelfServes reports whether RunIfAgent was called in this process, i.e. whether
// os.Executable() run with PluginArg is an agent.
func SelfServes() bool { return selfServes.Load() }
