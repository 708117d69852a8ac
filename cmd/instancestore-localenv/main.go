//go:build linux

// Command instancestore-localenv brings the local EC2 + S3 environment up and down:
// an S3 server behind a front that records ACLs, the EC2/STS simulator, and base
// instance-store AMIs whose instances are sshd in network namespaces. It needs root.
//
//	sudo instancestore-localenv up [--dir DIR] [--s3 gofakes3|minio] [--region R] [--machines namespace|vm] [--debian] [--foreground]
//	eval "$(sudo cat DIR/env)"   # or: eval "$(sudo instancestore-localenv up)"
//	sudo instancestore-localenv down [--dir DIR]
//
// `up` starts a daemon (this program with --foreground, in its own session, logging
// to DIR/localenv.log), waits until it is ready and prints the variables a shell needs
// as `export NAME='value'` lines on stdout (also in DIR/env, mode 0600). With
// --foreground it serves in the terminal until Ctrl-C or SIGTERM instead. `down` stops
// the daemon, which terminates every instance (sshd, namespaces, mounts, loop devices),
// then sweeps and reports anything left.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

const usage = `usage:
  instancestore-localenv up [--dir DIR] [--s3 gofakes3|minio] [--region REGION] [--machines namespace|vm] [--debian] [--foreground]
  instancestore-localenv down [--dir DIR]
  instancestore-localenv env [--dir DIR]      print the variables of a running environment

The environment needs root (network namespaces, loop devices, mounts).
DIR defaults to ` + localenv.DefaultDir + `.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case "env":
		err = env(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "instancestore-localenv: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "instancestore-localenv %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", localenv.DefaultDir, "state directory (env file, log, AMI images, instance copies)")
	s3 := fs.String("s3", "gofakes3", "S3 server: gofakes3 (in-process) or minio (checks signatures; built on first use)")
	region := fs.String("region", "us-east-1", "region of the simulator and of the S3 default")
	fg := fs.Bool("foreground", false, "serve in this process until interrupted instead of starting a daemon")
	machines := fs.String("machines", "namespace", "what instances are: namespace (sshd in a network namespace, fast) or vm (qemu guests that boot the AMI; Debian base AMIs)")
	debian := fs.Bool("debian", false, "also seed "+localenv.DebianAMIName+" (debootstrap; minutes the first time, then cached)")
	daemon := fs.Bool("daemon", false, "internal: set by up for the daemon it starts (keeps the credentials out of the log)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the daemon to be ready")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := localenv.RequireRoot(); err != nil {
		return err
	}
	if *fg {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		logger := log.New(os.Stderr, "", log.LstdFlags)
		return localenv.Serve(ctx, localenv.Options{Dir: *dir, S3: *s3, Region: *region, Machines: *machines, Debian: *debian, Logf: logger.Printf}, func(e *localenv.Env) {
			if !*daemon {
				fmt.Print(localenv.FormatVars(e.Vars()))
			}
			logger.Printf("localenv: ready; EC2 actions: %s", strings.Join(ec2sim.Actions(), " "))
		})
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	fmt.Fprintf(os.Stderr, "starting the local environment in %s (log: %s/%s) ...\n", *dir, *dir, localenv.LogFileName)
	args = []string{"up", "--foreground", "--daemon", "--dir", *dir, "--s3", *s3, "--region", *region, "--machines", *machines}
	if *debian {
		args = append(args, "--debian")
	}
	vars, err := localenv.Up(ctx, *dir, exe, args)
	if err != nil {
		return err
	}
	fmt.Print(localenv.FormatVars(vars))
	fmt.Fprintf(os.Stderr, "ready. Load it in a shell with: eval \"$(sudo cat %s/%s)\"; stop it with: sudo instancestore-localenv down --dir %s\n", *dir, localenv.EnvFileName, *dir)
	return nil
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", localenv.DefaultDir, "state directory given to up")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the instances to terminate")
	fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := localenv.Down(ctx, *dir); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "the local environment in %s is down; no namespace, mount, loop device or process of it remains\n", *dir)
	return nil
}

func env(args []string) error {
	fs := flag.NewFlagSet("env", flag.ExitOnError)
	dir := fs.String("dir", localenv.DefaultDir, "state directory given to up")
	fs.Parse(args)
	vars, err := localenv.ReadEnvFile(*dir + "/" + localenv.EnvFileName)
	if err != nil {
		return fmt.Errorf("no running environment in %s: %w", *dir, err)
	}
	fmt.Print(localenv.FormatVars(vars))
	return nil
}
