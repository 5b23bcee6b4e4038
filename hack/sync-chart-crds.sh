#!/usr/bin/env bash
# Copies the CRDs into the Helm chart: crds/ is the one source of truth, the chart's crds/
# is a copy (Helm installs only files inside the chart). kopf's peering CRDs
# (hack/kopf-peering-crds.yaml) go along, since the chart renders peering objects.
# tests/unit/test_chart.py fails when the copies differ; run this after editing crds/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
chart_crds="$root/charts/proxmigrate/crds"

shopt -s nullglob
sources=("$root"/crds/*.yaml)
[[ ${#sources[@]} -gt 0 ]] || { echo "sync-chart-crds: no CRDs in $root/crds" >&2; exit 1; }

mkdir -p "$chart_crds"
rm -f "$chart_crds"/*.yaml
cp "${sources[@]}" "$root/hack/kopf-peering-crds.yaml" "$chart_crds/"
echo "sync-chart-crds: $(ls "$chart_crds" | wc -l) CRD files in $chart_crds" >&2
