// Command launch starts an instance of an AMI in the local EC2 environment (or any EC2
// endpoint the AWS environment variables point to), runs one command on it over SSH,
// prints the output and terminates the instance again. `make demo` uses it to show the
// file the template's provisioner wrote into the new AMI.
//
//	go run ./example/local/launch -ami ami-0123 -user admin -- cat /etc/instancestore/demo.txt
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/instancestore/packer-plugin-instancestore/internal/launch"
)

func main() {
	ami := flag.String("ami", "", "AMI id to launch (required)")
	user := flag.String("user", "admin", "SSH login user")
	itype := flag.String("instance-type", "m3.medium", "instance type")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after")
	flag.Parse()
	if *ami == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: launch -ami AMI [-user USER] -- COMMAND...")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "launch:", err)
		os.Exit(1)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "launch: "+format+"\n", args...) }
	out, err := launch.Run(ctx, ec2.NewFromConfig(cfg), *ami, *itype, *user, strings.Join(flag.Args(), " "), logf)
	fmt.Print(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "launch:", err)
		os.Exit(1)
	}
}
