#!/usr/bin/env bash
# build-control-plane.sh kube-apiserver|kube-controller-manager|etcd VERSION OUT: builds one
# control-plane binary from the Go module proxy into OUT (hack/provision.py runs it and moves
# OUT into the cache).
# k8s.io/kubernetes and etcd's server module both carry `replace` directives, so
# `go install pkg@version` refuses them; a throwaway wrapper module requires the
# release and replaces each staging module with its published version instead.
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: $0 kube-apiserver|kube-controller-manager|etcd VERSION OUT" >&2; exit 2; }
component=$1 version=$2 out=$3

die() { echo "build-control-plane: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed. Install Go >= 1.25 from https://go.dev/doc/install (Debian bookworm's golang-go is 1.19, too old) and run again."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 25 ]] || die "Go $(go env GOVERSION) is too old: $component $version needs Go >= 1.25."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# wrapper_module MODULE VERSION STAGING_VERSION: a go.mod in $work requiring MODULE@VERSION
# with every `replace X => ./local` of that release turned into `replace X => X <published>`.
wrapper_module() {
  local module=$1 version=$2 staging_version=$3 gomod
  gomod=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
    || die "cannot download $module@$version from the Go module proxy ($(go env GOPROXY)): check network access or set GOPROXY"
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
  } > "$work/go.mod"
}

# build PACKAGE LDFLAGS: build PACKAGE of the wrapper module into $out. `-s -w` drops the
# symbol table and DWARF: a quarter less link CPU, a 30 % smaller binary; `-dwarf=false`
# keeps the compiler from making the DWARF the linker drops: 11 % less CPU; `-l` (no
# inlining) a further 19 % less CPU, for binaries that only serve tests and the demo
# (hack/README.md).
build() {
  cd "$work"
  printf '//go:build tools\npackage main\nimport _ "%s"\n' "$1" > tools.go
  go mod tidy
  CGO_ENABLED=0 go build -trimpath -gcflags="all=-dwarf=false -l" -ldflags "-s -w $2" -o "$out" "$1"
}

case "$component" in
  kube-apiserver|kube-controller-manager)
    minor=$(echo "$version" | sed -E 's/^v1\.([0-9]+)\..*/\1/')
    wrapper_module k8s.io/kubernetes "$version" "v0.${version#v1.}"
    build "k8s.io/kubernetes/cmd/$component" \
      "-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ;;
  etcd)
    wrapper_module go.etcd.io/etcd/server/v3 "$version" "$version"
    build go.etcd.io/etcd/server/v3 ""
    ;;
  *) die "unknown component $component (kube-apiserver, kube-controller-manager or etcd)" ;;
esac
