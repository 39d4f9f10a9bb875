//go:build tools

// Package tools pins talosctl v1.12.1 so `go build github.com/siderolabs/talos/cmd/talosctl` resolves from go.sum.
package tools

import _ "github.com/siderolabs/talos/cmd/talosctl"
