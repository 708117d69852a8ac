//go:build tools

// Package tools pins Packer for scripts/build-tools.sh packer-next.
package tools

import _ "github.com/hashicorp/packer"
