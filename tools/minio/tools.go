//go:build tools

// Package tools pins the MinIO server version; scripts/build-minio.sh builds it.
package tools

import _ "github.com/minio/minio"
