//go:build tools

// Package tools pins the containerd commands (containerd, its runc shim, ctr) so `go build` resolves them
// from this module's go.sum.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
