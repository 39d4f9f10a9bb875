#!/usr/bin/env bash
# Build the test tools from pinned Go modules and fetch the pinned upstream CRDs (both cached, keyed by version).
#
# Contract:
# - Pins come from tools/versions.env only.
# - Binaries: kube-apiserver (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3), kustomize, built with
#   CGO_ENABLED=0 into $CAPI_ROLLOUT_CACHE/bin/<kubernetes>-<etcd>-<kustomize>/ with version ldflags, so
#   kube-apiserver's /version reports the pinned release. Go caches live in $CAPI_ROLLOUT_CACHE/go/.
# - envtest convention: if KUBEBUILDER_ASSETS (or TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD) name existing
#   binaries, nothing is built.
# - CRDs: extracted from the Go module zips (`go mod download -json`) into $CAPI_ROLLOUT_CACHE/crds/<set>-<version>/.
# - Idempotent: a second run finds the binaries, their stamp and the CRD stamps and exits in about a second.
set -euo pipefail

# shellcheck source=tools/pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/pins.sh"
: "${KUBERNETES_VERSION:?}" "${ETCD_VERSION:?}" "${KUSTOMIZE_VERSION:?}"

export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
bindir="$cache/bin/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kustomize-$KUSTOMIZE_VERSION"

log() { printf '[tools] %s\n' "$*" >&2; }

# Stamp content: the binary pins plus the module files, so a changed pin or dependency rebuilds (CRD pins do not).
stamp_content() {
  { grep -E '^(KUBERNETES|ETCD|KUSTOMIZE)_VERSION=' "$here/versions.env"
    cat "$here"/{kube,etcd,kustomize}/go.{mod,sum}; } | sha256sum | cut -d' ' -f1
}

build_one() { # build_one <name> <module dir> <package> [ldflags]
  local name="$1" dir="$2" pkg="$3" ldflags="${4:-}"
  local started=$SECONDS
  log "building $name from $pkg (module tools/$dir) -> $bindir/$name"
  (cd "$here/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bindir/$name.tmp" "$pkg")
  mv "$bindir/$name.tmp" "$bindir/$name"
  log "built $name in $((SECONDS - started))s"
}

build_binaries() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/kube-apiserver" && -x "${KUBEBUILDER_ASSETS}/etcd" ]]; then
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has kube-apiserver and etcd: building nothing"
    return
  fi
  if [[ -x "${TEST_ASSET_KUBE_APISERVER:-}" && -x "${TEST_ASSET_ETCD:-}" ]]; then
    log "TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD are set: building nothing"
    return
  fi
  local stamp="$bindir/.stamp" want
  want="$(stamp_content)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bindir/kube-apiserver" && -x "$bindir/etcd" && -x "$bindir/kustomize" ]]; then
    log "binaries up to date in $bindir"
    return
  fi
  mkdir -p "$bindir"
  log "go $(go env GOVERSION), GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"
  local kflags
  kflags="$(kube_ldflags)"
  build_one etcd etcd capi-rollout.local/tools/etcd
  build_one kustomize kustomize sigs.k8s.io/kustomize/kustomize/v5 \
    "-X sigs.k8s.io/kustomize/api/provenance.version=$KUSTOMIZE_VERSION"
  build_one kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver "$kflags"
  printf '%s' "$want" > "$stamp"
  "$bindir/kube-apiserver" --version >&2
}

# actionlint (checks .github/workflows) into $CAPI_ROLLOUT_CACHE/bin/actionlint-<version>/; `make lint` runs it when
# present. Its own stamp: a changed pin or go.sum rebuilds it, the other binaries are untouched.
build_actionlint() {
  : "${ACTIONLINT_VERSION:?}"
  local dir="$cache/bin/actionlint-$ACTIONLINT_VERSION" want
  want="$({ echo "$ACTIONLINT_VERSION"; cat "$here"/actionlint/go.{mod,sum}; } | sha256sum | cut -d' ' -f1)"
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$want" && -x "$dir/actionlint" ]]; then
    log "actionlint $ACTIONLINT_VERSION up to date in $dir"
    return
  fi
  mkdir -p "$dir"
  local bindir="$dir"
  build_one actionlint actionlint github.com/rhysd/actionlint/cmd/actionlint \
    "-X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION"
  printf '%s' "$want" > "$dir/.stamp"
}

case "${1:-all}" in
  binaries) build_binaries ;;
  crds) bash "$here/crds.sh" ;;
  actionlint) build_actionlint ;;
  all) build_binaries; build_actionlint; bash "$here/crds.sh" ;;
  *) echo "usage: $0 [all|binaries|crds|actionlint]" >&2; exit 2 ;;
esac
