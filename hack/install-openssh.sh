#!/usr/bin/env bash
# Install Debian's OpenSSH server and client for `pvesim serve --sshd openssh` (real sshd per
# simulated node, docs/pvesim.md "Real OpenSSH"). Idempotent: nothing happens when sshd, ssh and
# ssh-keygen are present. Only installs the binaries: the Debian package's own sshd service is
# neither needed nor started here (pvesim runs its own sshd processes on loopback).
set -euo pipefail

have() { [[ -x /usr/sbin/sshd ]] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; }
have && exit 0
fail() { echo "install-openssh: $*" >&2; exit 1; }
command -v apt-get >/dev/null \
  || fail "no apt-get here: install OpenSSH's sshd (/usr/sbin/sshd), ssh and ssh-keygen by hand"
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || fail "not root and no sudo: run 'apt-get install openssh-server openssh-client' as root"
  SUDO=(sudo -n)
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# policy-rc.d 101: the package's postinst must not start a system sshd on port 22.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod +x "$policy"
  created_policy=1
fi
status=0
{ "${SUDO[@]}" apt-get update -q && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q \
    --no-install-recommends openssh-server openssh-client; } >"$log" 2>&1 || status=$?
[[ $created_policy -eq 1 ]] && "${SUDO[@]}" rm -f "$policy"
[[ $status -eq 0 ]] || fail "apt-get install openssh-server openssh-client failed: $(tail -1 "$log")"
have || fail "openssh-server installed but /usr/sbin/sshd is still missing"
