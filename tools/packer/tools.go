//go:build tools

// Package tools records the commands this module pins; it is never built.
package tools

import (
	_ "github.com/hashicorp/packer"
)
