#!/usr/bin/env bash
# Build the real node's binaries from pinned Go modules (cached, keyed by version) and install its Debian packages.
#
# Contract:
# - Pins come from tools/versions.env only (KUBERNETES_VERSION, CONTAINERD_VERSION, ARGO_WORKFLOWS_VERSION,
#   PAUSE_VERSION). Binaries go to $CAPI_ROLLOUT_CACHE/bin/node-kubernetes-<v>-containerd-<v>-argo-<v>/:
#   kubelet, kube-scheduler, kube-controller-manager, kube-proxy, kubectl (module tools/node, k8s.io/kubernetes
#   with the same staging replaces as tools/kube), containerd, containerd-shim-runc-v2, ctr (module
#   tools/containerd), workflow-controller and argoexec (the pinned Argo module), and pause (gcc -static of the
#   Kubernetes module's build/pause/linux/pause.c). All Go builds use CGO_ENABLED=0.
# - argoexec does not build from the module zip: upstream's workflow/executor/osspecific/signal_linux.go is a
#   symlink to signal_darwin.go and module zips drop symlinks. The Argo module is copied to
#   $CAPI_ROLLOUT_CACHE/src/ and that one file is restored there (as the symlink would) before building.
# - Debian packages the node runs with (runc, the CNI plugins, iptables, debootstrap, iproute2) are installed
#   with apt-get when missing (root only; otherwise the missing ones are named and the script fails).
# - Each component prints what it builds and how long it took; the first build takes tens of minutes on 2 cores.
# - Idempotent: a second run finds the stamp and exits at once.
set -euo pipefail

# shellcheck source=tools/pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/pins.sh"
: "${KUBERNETES_VERSION:?}" "${CONTAINERD_VERSION:?}" "${ARGO_WORKFLOWS_VERSION:?}" "${PAUSE_VERSION:?}"

export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
bindir="$cache/bin/node-kubernetes-$KUBERNETES_VERSION-containerd-$CONTAINERD_VERSION-argo-$ARGO_WORKFLOWS_VERSION"
argo_module="github.com/argoproj/argo-workflows/v4"

log() { printf '[node-tools] %s\n' "$*" >&2; }

debian_packages() {
  local -A wanted=([runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins [iptables]=iptables
                   [debootstrap]=debootstrap [ip]=iproute2 [nsenter]=util-linux)
  local missing=() thing
  for thing in "${!wanted[@]}"; do
    if [[ "$thing" == /* ]]; then [[ -e "$thing" ]] || missing+=("${wanted[$thing]}")
    else command -v "$thing" >/dev/null || missing+=("${wanted[$thing]}"); fi
  done
  ((${#missing[@]} == 0)) && return
  if [[ $(id -u) != 0 ]]; then
    log "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"; exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

stamp_content() {
  { grep -E '^(KUBERNETES|CONTAINERD|ARGO_WORKFLOWS|PAUSE)_VERSION=' "$here/versions.env"
    cat "$here"/{node,containerd}/go.{mod,sum} "$here/node.sh"; } | sha256sum | cut -d' ' -f1
}

timed() { # timed <what> <command...>
  local what="$1" started=$SECONDS; shift
  log "building $what ..."
  "$@"
  log "built $what in $((SECONDS - started))s"
}

build_kube() {
  local flags name
  flags="$(kube_ldflags)"
  for name in kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    timed "$name (k8s.io/kubernetes $KUBERNETES_VERSION)" \
      bash -c "cd '$here/node' && go build -trimpath -ldflags '-s -w $flags' -o '$bindir/$name.tmp' k8s.io/kubernetes/cmd/$name"
    mv "$bindir/$name.tmp" "$bindir/$name"
  done
}

build_containerd() {
  (cd "$here/containerd" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
     -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" -o "$bindir/" \
     github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
     github.com/containerd/containerd/v2/cmd/ctr)
}

build_argo() {
  local dir src="$cache/src/argo-workflows-$ARGO_WORKFLOWS_VERSION"
  dir="$(go mod download -json "$argo_module@$ARGO_WORKFLOWS_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || { log "go mod download $argo_module@$ARGO_WORKFLOWS_VERSION gave no directory"; exit 1; }
  if [[ ! -f "$src/.complete" ]]; then
    rm -rf "$src" && mkdir -p "$(dirname "$src")"
    cp -r "$dir" "$src.tmp" && chmod -R u+w "$src.tmp"
    # The symlink the module zip dropped (upstream: signal_linux.go -> signal_darwin.go).
    cp "$src.tmp/workflow/executor/osspecific/signal_darwin.go" "$src.tmp/workflow/executor/osspecific/signal_linux.go"
    touch "$src.tmp/.complete" && mv "$src.tmp" "$src"
  fi
  (cd "$src" && go build -trimpath -ldflags "-s -w -X $argo_module.version=$ARGO_WORKFLOWS_VERSION" -o "$bindir/" \
     ./cmd/workflow-controller ./cmd/argoexec)
}

build_pause() {
  local src
  src="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$bindir/pause" "$src/build/pause/linux/pause.c"
}

main() {
  debian_packages
  local stamp="$bindir/.stamp" want
  want="$(stamp_content)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "node binaries up to date in $bindir"
    return
  fi
  mkdir -p "$bindir"
  log "go $(go env GOVERSION); the first build of the node takes 20-40 minutes on 2 cores (cached afterwards)"
  local started=$SECONDS
  timed "pause $PAUSE_VERSION (gcc -static)" build_pause
  timed "containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr)" build_containerd
  timed "Argo Workflows $ARGO_WORKFLOWS_VERSION (workflow-controller, argoexec)" build_argo
  build_kube
  printf '%s' "$want" > "$stamp"
  log "node binaries ready in $bindir after $((SECONDS - started))s"
}

main "$@"
