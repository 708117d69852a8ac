package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/agent"
)

func init() {
	register(command{
		name:    "agent",
		summary: "run as the Packer plugin's agent (JSON request and events on stdin/stdout)",
		run: func(args []string, stdout, stderr io.Writer) error {
			if len(args) > 0 {
				if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
					fmt.Fprintln(stderr, "usage: instancestore-bundler agent\n\n"+
						"Reads one JSON request on stdin and writes JSON-lines events on stdout; the\n"+
						"instancestore Packer plugin starts it over its communicator. Not for direct use.")
					return nil
				}
				return fmt.Errorf("%w: agent takes no arguments", errUsage)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
			defer stop()
			return agent.Run(ctx, os.Stdin, stdout)
		},
	})
}
