//go:build tools

// Package tools records the command this module pins; it is never built.
package tools

import _ "github.com/hashicorp/packer-plugin-amazon"
