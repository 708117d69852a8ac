// Command instancestore-bundler is the Go replacement of Amazon's ec2-ami-tools: it
// bundles images and live volumes into EC2 instance-store bundles, unbundles and
// verifies them, and runs as the agent that the Packer plugin drives over its
// communicator.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/instancestore/packer-plugin-instancestore/version"
)

// command is one sub-command. Each lives in its own file and registers itself in init.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// errUsage marks errors caused by how the command was called (exit status 2).
var errUsage = errors.New("usage error")

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: instancestore-bundler COMMAND [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "  %-14s %s\n", "version", "print the version")
	fmt.Fprintf(w, "\nRun 'instancestore-bundler COMMAND -h' for the flags of a command.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(stdout, "instancestore-bundler", version.PluginVersion.FormattedVersion())
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "instancestore-bundler: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	if err := c.run(args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "instancestore-bundler %s: %s\n", c.name, strings.TrimSpace(err.Error()))
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}
