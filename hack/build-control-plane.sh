#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into a version-keyed cache.
# k8s.io/kubernetes and etcd's server module both carry `replace` directives, so
# `go install pkg@version` refuses them; a throwaway wrapper module requires the
# release and replaces each staging module with its published version instead.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${PROXMIGRATE_CACHE:-$HOME/.cache/proxmigrate}"
BIN="$CACHE/bin"
APISERVER="$BIN/kube-apiserver-$K8S_VERSION"
ETCD="$BIN/etcd-$ETCD_VERSION"

die() { echo "build-control-plane: $*" >&2; exit 1; }

if [[ -x "$APISERVER" && -x "$ETCD" ]]; then
  exit 0
fi

command -v go >/dev/null 2>&1 || die "Go is not installed. Install Go >= 1.25 from https://go.dev/doc/install (Debian bookworm's golang-go is 1.19, too old) and run again."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 25 ]] || die "Go $(go env GOVERSION) is too old: Kubernetes $K8S_VERSION needs Go >= 1.25."
go list -m -versions k8s.io/kubernetes >/dev/null 2>&1 \
  || die "the Go module proxy ($(go env GOPROXY)) does not answer: cannot download k8s.io/kubernetes. Check network access to the Go module proxy or set GOPROXY."

mkdir -p "$BIN"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# wrapper_module DIR MODULE VERSION: a go.mod requiring MODULE@VERSION with every
# `replace X => ./local` of that release turned into `replace X => X <published version>`.
wrapper_module() {
  local dir=$1 module=$2 version=$3 staging_version=$4
  mkdir -p "$dir"
  local gomod
  gomod=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module proxmigrate.dev/controlplane"
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo "require $module $version"
    python3 - "$gomod" "$staging_version" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
pairs = re.findall(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+(\.\.?/\S+)\s*$", text, re.M)
# etcd bans some modules with `=> ./FORBIDDEN_DEPENDENCY`; those are not dependencies to pin.
for path in sorted({path for path, local in pairs if "FORBIDDEN" not in local}):
    print(f"replace {path} => {path} {sys.argv[2]}")
PY
  } > "$dir/go.mod"
}

if [[ ! -x "$APISERVER" ]]; then
  echo "build-control-plane: building kube-apiserver $K8S_VERSION (first run only; several minutes)" >&2
  minor=$(echo "$K8S_VERSION" | sed -E 's/^v1\.([0-9]+)\..*/\1/')
  staging="v0.${K8S_VERSION#v1.}"
  wrapper_module "$work/k8s" k8s.io/kubernetes "$K8S_VERSION" "$staging"
  (
    cd "$work/k8s"
    printf '//go:build tools\npackage main\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
    go mod tidy
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$APISERVER.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  )
  mv "$APISERVER.tmp" "$APISERVER"
fi

if [[ ! -x "$ETCD" ]]; then
  echo "build-control-plane: building etcd $ETCD_VERSION (first run only)" >&2
  wrapper_module "$work/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION"
  (
    cd "$work/etcd"
    printf '//go:build tools\npackage main\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go mod tidy
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ETCD.tmp" go.etcd.io/etcd/server/v3
  )
  mv "$ETCD.tmp" "$ETCD"
fi
echo "build-control-plane: kube-apiserver $K8S_VERSION and etcd $ETCD_VERSION in $BIN" >&2
