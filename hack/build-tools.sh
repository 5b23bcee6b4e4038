#!/usr/bin/env bash
# build-tools.sh helm|promtool VERSION OUT: builds one test tool from the Go module proxy into
# OUT (hack/provision.py runs it and moves OUT into the cache). Neither module carries
# `replace` directives at the pinned versions, so plain `go install pkg@version` works
# (checked with `go mod download -json`).
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: $0 helm|promtool VERSION OUT" >&2; exit 2; }
tool=$1 version=$2 out=$3

die() { echo "build-tools: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed. Install Go >= 1.26 (https://go.dev/doc/install) and run again."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: $tool $version needs Go >= 1.26."
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT

# go_install PACKAGE@VERSION LDFLAGS: go install into a scratch GOBIN, then to $out.
go_install() {
  GOBIN="$gobin" go install -trimpath -gcflags="all=-dwarf=false -l" -ldflags "-s -w $2" "$1"
  mv "$gobin/$(basename "${1%@*}")" "$out"
}

case "$tool" in
  helm)
    # Helm's Makefile stamps the Kubernetes version it assumes without a cluster (for
    # `helm template` and `lint`) from its client-go release v0.X.Y -> 1.X; unstamped it is 1.20.
    gomod=$(go mod download -json "helm.sh/helm/v3@$version" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
      || die "cannot download helm $version from the Go module proxy ($(go env GOPROXY)): check network access or set GOPROXY"
    kube_minor=$(sed -nE 's#^\s*k8s.io/client-go v0\.([0-9]+)\..*#\1#p' "$gomod")
    [[ -n "$kube_minor" ]] || die "cannot read helm's client-go version from $gomod"
    ldflags="-X helm.sh/helm/v3/internal/version.version=$version"
    for package in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
      ldflags+=" -X $package.k8sVersionMajor=1 -X $package.k8sVersionMinor=$kube_minor"
    done
    go_install "helm.sh/helm/v3/cmd/helm@$version" "$ldflags"
    ;;
  promtool)
    # Prometheus 3.x publishes its Go module as v0.<major*100+minor>.<patch> (v0.316.0 is
    # 3.16.0); its Makefile stamps that release into `promtool --version`.
    release=$(echo "$version" | sed -E 's/^v0\.([0-9]+)([0-9]{2})\.([0-9]+)$/\1.\2.\3/; s/\.0([0-9])\./.\1./')
    go_install "github.com/prometheus/prometheus/cmd/promtool@$version" \
      "-X github.com/prometheus/common/version.Version=$release"
    ;;
  *) die "unknown tool $tool (helm or promtool)" ;;
esac
