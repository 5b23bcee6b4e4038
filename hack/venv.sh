#!/usr/bin/env bash
# venv.sh VENV SPEC WHAT EXPECTED: create the virtualenv VENV if needed and `pip install -e
# SPEC` into it, saying in one line what and how long; pip's output goes to VENV/pip.log,
# shown in full only if it fails. hack/provision.py runs it (`--venv`: `.` for the demo,
# `.[dev]` with `--dev`) beside the builds.
set -euo pipefail

[[ $# -eq 4 ]] || { echo "usage: $0 VENV SPEC WHAT EXPECTED" >&2; exit 2; }
venv=$1 spec=$2 what=$3 expected=$4
python=${PYTHON:-python3}
log=$venv/pip.log

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "venv: Python >= 3.11 is required (found $("$python" --version 2>&1))" >&2; exit 1; }
echo "venv: installing $what into $venv (about $expected, once; log: $log)"
start=$(date +%s)
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv" \
  || { echo "venv: \`$python -m venv\` failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$spec"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "venv: pip install -e '$spec' failed; full log above and in $log" >&2
  exit 1
fi
echo "venv: done in $(($(date +%s) - start)) s"
