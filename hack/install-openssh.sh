#!/usr/bin/env bash
# hack/provision.py's `sshd` component: Debian's OpenSSH server and client for
# `pvesim serve --sshd openssh` (one real sshd per simulated node, docs/pvesim.md "Real
# OpenSSH"). Usage: install-openssh.sh OUT. Installs openssh-server and openssh-client with
# apt-get when sshd, ssh or ssh-keygen is missing (the package's own sshd service is neither
# needed nor started: pvesim runs its own sshd processes on loopback), then links OUT to sshd.
# Where it cannot install, it says in one line what is missing.
set -euo pipefail

out=${1:?usage: install-openssh.sh OUT}
export PATH="$PATH:/usr/sbin:/sbin"  # sshd lives in /usr/sbin, off a normal user's PATH

missing() {
  local tool
  for tool in sshd ssh ssh-keygen setpriv; do command -v "$tool" >/dev/null || printf ' %s' "$tool"; done
}
fail() { echo "install-openssh: missing$(missing): $*" >&2; exit 1; }

if [[ -n $(missing) ]]; then
  command -v apt-get >/dev/null \
    || fail "no apt-get here: install OpenSSH's server and client (sshd, ssh, ssh-keygen) by hand"
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null \
      || fail "not root and no sudo: run 'apt-get install openssh-server openssh-client' as root"
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
  { "${SUDO[@]}" apt-get update -q \
      && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q \
        --no-install-recommends openssh-server openssh-client; } >"$log" 2>&1 || status=$?
  [[ $created_policy -eq 1 ]] && "${SUDO[@]}" rm -f "$policy"
  [[ $status -eq 0 ]] || fail "apt-get install openssh-server openssh-client failed: $(tail -1 "$log")"
  [[ -z $(missing) ]] || fail "still missing after apt-get install openssh-server openssh-client"
fi
ln -sfn "$(command -v sshd)" "$out"
