#!/usr/bin/env bash
# Build the Argo Events binaries the real node runs, from pinned Go modules (cached, keyed by version).
#
# Contract:
# - Pins come from tools/versions.env only (ARGO_EVENTS_VERSION, NATS_SERVER_VERSION, COREDNS_VERSION). Binaries
#   go to $CAPI_ROLLOUT_CACHE/bin/events-argo-events-<v>-nats-<v>-coredns-<v>/: argo-events
#   (github.com/argoproj/argo-events ./cmd: the controller-manager, and the EventSource, Sensor pods, which run the
#   same image), nats-server (github.com/nats-io/nats-server/v2, the JetStream EventBus server) and coredns (module
#   tools/coredns: github.com/coredns/coredns with the plugins of the Kubernetes module's CoreDNS addon Corefile;
#   the EventSource and Sensor find the EventBus by its Service name). CGO_ENABLED=0, -trimpath, the version -X
#   flags of argo-events' and nats-server's release builds (CoreDNS has its version in code).
# - The JetStream StatefulSet also names a config reloader (github.com/nats-io/nack) and a metrics exporter
#   (github.com/nats-io/prometheus-nats-exporter); the Go module proxy refuses both modules ("not available"), so
#   nothing is built for them: the node points the controller's configuration at the pause image for those two
#   side containers (e2e/backends/node.py), which the event path never uses.
# - Each build prints what it builds and how long it took. Idempotent: a second run finds the stamp and exits.
set -euo pipefail

# shellcheck source=tools/pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/pins.sh"
: "${ARGO_EVENTS_VERSION:?}" "${NATS_SERVER_VERSION:?}" "${COREDNS_VERSION:?}"

export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
bindir="$cache/bin/events-argo-events-$ARGO_EVENTS_VERSION-nats-$NATS_SERVER_VERSION-coredns-$COREDNS_VERSION"

log() { printf '[node-tools] %s\n' "$*" >&2; }

stamp_content() {
  { grep -E '^(ARGO_EVENTS|NATS_SERVER|COREDNS)_VERSION=' "$here/versions.env"
    cat "$here/events.sh" "$here"/coredns/{go.mod,go.sum,main.go}; } | sha256sum | cut -d' ' -f1
}

timed() { # timed <what> <command...>
  local what="$1" started=$SECONDS; shift
  log "building $what ..."
  "$@"
  log "built $what in $((SECONDS - started))s"
}

module_dir() { # module_dir <module@version>: download it, print its directory in the module cache
  local dir
  dir="$(go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || { log "go mod download $1 gave no directory"; exit 1; }
  printf '%s' "$dir"
}

build_argo_events() {
  local dir package=github.com/argoproj/argo-events
  dir="$(module_dir "$package@$ARGO_EVENTS_VERSION")"
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X $package.version=$ARGO_EVENTS_VERSION -X $package.gitTreeState=clean" \
     -o "$bindir/argo-events.tmp" ./cmd)
  mv "$bindir/argo-events.tmp" "$bindir/argo-events"
}

build_nats_server() {
  local dir package=github.com/nats-io/nats-server/v2
  dir="$(module_dir "$package@$NATS_SERVER_VERSION")"
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X $package/server.serverVersion=$NATS_SERVER_VERSION" \
     -o "$bindir/nats-server.tmp" .)
  mv "$bindir/nats-server.tmp" "$bindir/nats-server"
}

build_coredns() {
  local package=github.com/coredns/coredns
  grep -q "^require $package $COREDNS_VERSION\$" "$here/coredns/go.mod" || {
    log "tools/coredns/go.mod does not require $package $COREDNS_VERSION (COREDNS_VERSION in tools/versions.env)"; exit 1; }
  (cd "$here/coredns" && go build -trimpath -ldflags "-s -w" -o "$bindir/coredns.tmp" .)
  mv "$bindir/coredns.tmp" "$bindir/coredns"
}

main() {
  local stamp="$bindir/.stamp" want started=$SECONDS
  want="$(stamp_content)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "Argo Events binaries up to date in $bindir"
    return
  fi
  mkdir -p "$bindir"
  log "go $(go env GOVERSION); the first build of argo-events takes about 10 minutes on 2 cores (cached afterwards)"
  timed "nats-server $NATS_SERVER_VERSION (github.com/nats-io/nats-server/v2)" build_nats_server
  timed "argo-events $ARGO_EVENTS_VERSION (github.com/argoproj/argo-events ./cmd)" build_argo_events
  timed "coredns $COREDNS_VERSION (tools/coredns: github.com/coredns/coredns, the addon Corefile's plugins)" build_coredns
  printf '%s' "$want" > "$stamp"
  log "Argo Events binaries ready in $bindir after $((SECONDS - started))s"
}

main "$@"
