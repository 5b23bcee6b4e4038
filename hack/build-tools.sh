#!/usr/bin/env bash
# Builds the chart and alert-rule tools (helm, promtool) from the Go module proxy into a
# version-keyed cache, so tests find them as $CACHE/bin/helm-<version> and
# $CACHE/bin/promtool-<version>. Neither module carries `replace` directives at these
# versions, so plain `go install pkg@version` works (checked with `go mod download -json`).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# Prometheus 3.x publishes its Go module as v0.<major*100+minor>.<patch>: v0.316.0 is 3.16.0.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
CACHE="${PROXMIGRATE_CACHE:-$HOME/.cache/proxmigrate}"
BIN="$CACHE/bin"
HELM="$BIN/helm-$HELM_VERSION"
PROMTOOL="$BIN/promtool-$PROMETHEUS_VERSION"

die() { echo "build-tools: $*" >&2; exit 1; }

if [[ -x "$HELM" && -x "$PROMTOOL" ]]; then
  exit 0
fi

command -v go >/dev/null 2>&1 || die "Go is not installed. Install Go >= 1.26 (https://go.dev/doc/install) and run again."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: helm $HELM_VERSION and promtool $PROMETHEUS_VERSION need Go >= 1.26."
go list -m -versions helm.sh/helm/v3 >/dev/null 2>&1 \
  || die "the Go module proxy ($(go env GOPROXY)) does not answer: cannot download helm. Check network access to the Go module proxy or set GOPROXY."

mkdir -p "$BIN"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

# build_tool OUTPUT PACKAGE@VERSION [LDFLAGS]: go install into a scratch GOBIN, then move
# the binary to its version-keyed name in one step so a killed build leaves nothing behind.
build_tool() {
  local output=$1 package=$2 ldflags=${3:-}
  local gobin
  gobin=$(mktemp -d)
  echo "build-tools: building ${package} (first run only; a few minutes)" >&2
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w $ldflags" "$package"
  mv "$gobin/$(basename "${package%@*}")" "$output"
  rm -rf "$gobin"
}

if [[ ! -x "$HELM" ]]; then
  # Helm's Makefile stamps the Kubernetes version it assumes without a cluster (for
  # `helm template` and `lint`) from its client-go release v0.X.Y -> 1.X; unstamped it is 1.20.
  helm_gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  kube_minor=$(sed -nE 's#^\s*k8s.io/client-go v0\.([0-9]+)\..*#\1#p' "$helm_gomod")
  [[ -n "$kube_minor" ]] || die "cannot read helm's client-go version from $helm_gomod"
  ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for package in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $package.k8sVersionMajor=1 -X $package.k8sVersionMinor=$kube_minor"
  done
  build_tool "$HELM" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$ldflags"
fi
if [[ ! -x "$PROMTOOL" ]]; then
  build_tool "$PROMTOOL" "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
fi
echo "build-tools: helm $HELM_VERSION and promtool $PROMETHEUS_VERSION in $BIN" >&2
