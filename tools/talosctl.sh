#!/usr/bin/env bash
# Build the real talosctl, one per pinned Talos line, from the Go module proxy (cached, keyed by version).
#
# Contract:
# - Pins come from tools/versions.env: TALOSCTL_V112_VERSION (the line <= 1.12) and TALOSCTL_V113_VERSION (>= 1.13).
#   Each line has its own module, tools/talosctl/v1.<minor>/, whose go.mod requires github.com/siderolabs/talos and
#   github.com/siderolabs/talos/pkg/machinery at that version and carries upstream's replace directives (a module
#   required by another does not apply the other's replaces); its go.sum started from upstream's go.sum. The script
#   fails if the go.mod and the pin disagree.
# - Output: $CAPI_ROLLOUT_CACHE/bin/talosctl-<version>/talosctl, built with CGO_ENABLED=0 and upstream's talosctl
#   build tag (grpcnotrace); `talosctl version --client` reports the tag (pkg/machinery/gendata holds it).
# - Each build prints how long it took (several minutes cold on 2 cores). Idempotent: a stamp of the pin and the
#   module files makes a second run exit at once.
# - `bash tools/talosctl.sh path <v1.12|v1.13>` prints the binary's path (built or not) and builds nothing.
set -euo pipefail

# shellcheck source=tools/pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/pins.sh"
: "${TALOSCTL_V112_VERSION:?}" "${TALOSCTL_V113_VERSION:?}"

export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local

log() { printf '[talosctl] %s\n' "$*" >&2; }

version_of() { # version_of <v1.12|v1.13>
  case "$1" in
    v1.12) printf '%s' "$TALOSCTL_V112_VERSION" ;;
    v1.13) printf '%s' "$TALOSCTL_V113_VERSION" ;;
    *) log "unknown Talos line $1 (v1.12 or v1.13)"; exit 2 ;;
  esac
}

bindir_of() { printf '%s' "$cache/bin/talosctl-$(version_of "$1")"; }

build_line() { # build_line <v1.12|v1.13>
  local line="$1" version dir bindir stamp want started
  version="$(version_of "$line")"
  dir="$here/talosctl/$line"
  bindir="$(bindir_of "$line")"
  if ! grep -qE "^(require)?[[:space:]]+github.com/siderolabs/talos $version\$" "$dir/go.mod"; then
    log "tools/talosctl/$line/go.mod does not require github.com/siderolabs/talos $version (versions.env): update both"
    exit 1
  fi
  stamp="$bindir/.stamp"
  want="$(printf '%s\n' "$version" | cat - "$dir/go.mod" "$dir/go.sum" "$here/talosctl.sh" | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bindir/talosctl" ]]; then
    log "talosctl $version up to date in $bindir"
    return
  fi
  mkdir -p "$bindir"
  started=$SECONDS
  log "building talosctl $version (github.com/siderolabs/talos/cmd/talosctl, module tools/talosctl/$line) -> $bindir"
  (cd "$dir" && go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$bindir/talosctl.tmp" \
     github.com/siderolabs/talos/cmd/talosctl)
  mv "$bindir/talosctl.tmp" "$bindir/talosctl"
  printf '%s' "$want" > "$stamp"
  log "built talosctl $version in $((SECONDS - started))s: $("$bindir/talosctl" version --client --short 2>/dev/null | tail -1)"
}

case "${1:-all}" in
  all) log "go $(go env GOVERSION)"; build_line v1.12; build_line v1.13 ;;
  v1.12|v1.13) build_line "$1" ;;
  path) printf '%s/talosctl\n' "$(bindir_of "${2:?usage: $0 path <v1.12|v1.13>}")" ;;
  *) echo "usage: $0 [all|v1.12|v1.13|path <line>]" >&2; exit 2 ;;
esac
