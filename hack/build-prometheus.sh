#!/usr/bin/env bash
# build-prometheus.sh VERSION OUT: builds the Prometheus server (for the e2e alert test,
# tests/e2e/test_prometheus_alerts.py) from the Go module proxy into OUT, as
# hack/build-tools.sh builds promtool from the same module (hack/provision.py runs it and
# moves OUT into the cache). The module has no `replace` directives at v0.316.0.
#
# The web UI: at this version web/ui/ui.go (build tag !builtinassets) serves the UI from
# files on disk and web/ui/assets_embed.go (tag builtinassets) embeds a compiled React app
# that is not in the module (npm builds it). We build without the tag: the HTTP API
# (/api/v1/...) is complete, only the UI pages are missing, which the test never opens.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 VERSION OUT" >&2; exit 2; }
version=$1 out=$2

die() { echo "build-prometheus: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed. Install Go >= 1.26 (https://go.dev/doc/install) and run again."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: prometheus $version needs Go >= 1.26."
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
# Prometheus 3.x publishes its Go module as v0.<major*100+minor>.<patch> (v0.316.0 is
# 3.16.0); its Makefile stamps that release into `prometheus --version`.
release=$(echo "$version" | sed -E 's/^v0\.([0-9]+)([0-9]{2})\.([0-9]+)$/\1.\2.\3/; s/\.0([0-9])\./.\1./')
GOBIN="$gobin" go install -trimpath -gcflags="all=-dwarf=false -l" \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  "github.com/prometheus/prometheus/cmd/prometheus@$version" \
  || die "cannot build prometheus $version from the Go module proxy ($(go env GOPROXY)): check network access or set GOPROXY"
mv "$gobin/prometheus" "$out"
