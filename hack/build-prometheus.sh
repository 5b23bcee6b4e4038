#!/usr/bin/env bash
# Builds the Prometheus server (for the e2e alert test) from the Go module proxy into the
# version-keyed cache, as hack/build-tools.sh builds promtool from the same module:
# $CACHE/bin/prometheus-<version>.
#
# The web UI: at this version web/ui/ui.go (build tag !builtinassets) serves the UI from
# files on disk and web/ui/assets_embed.go (tag builtinassets) embeds a compiled React app
# that is not in the module (npm builds it). We build without the tag: the HTTP API
# (/api/v1/...) is complete, only the UI pages are missing, which the test never opens.
set -euo pipefail

PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"  # 3.16.0; keep equal to build-tools.sh
CACHE="${PROXMIGRATE_CACHE:-$HOME/.cache/proxmigrate}"
BIN="$CACHE/bin"
PROMETHEUS="$BIN/prometheus-$PROMETHEUS_VERSION"

die() { echo "build-prometheus: $*" >&2; exit 1; }

[[ -x "$PROMETHEUS" ]] && exit 0
command -v go >/dev/null 2>&1 || die "Go is not installed. Install Go >= 1.26 (https://go.dev/doc/install) and run again."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: prometheus $PROMETHEUS_VERSION needs Go >= 1.26."

mkdir -p "$BIN"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
echo "build-prometheus: building prometheus $PROMETHEUS_VERSION (first run only; a few minutes)" >&2
GOBIN="$gobin" go install -trimpath -ldflags "-s -w" \
  "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
  || die "building prometheus failed; check access to the Go module proxy ($(go env GOPROXY))"
mv "$gobin/prometheus" "$PROMETHEUS"
echo "build-prometheus: $PROMETHEUS" >&2
