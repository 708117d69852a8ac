//go:build !linux

// Command instancestore-localenv runs the local EC2 + S3 environment; it needs Linux
// (network namespaces, loop devices).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "instancestore-localenv needs Linux (network namespaces, loop devices, mounts) and root")
	os.Exit(1)
}
